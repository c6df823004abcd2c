# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %%

# %% [markdown]
# # RWKV-6 (Finch): a matrix-valued state with a data-dependent decay
#
# RWKV-6 (Peng et al. 2024, "Eagle and Finch", section 4) keeps per head a matrix state
# $S_t \in \mathbb{R}^{N \times N}$ and decays each key channel by an amount the token
# itself chooses (eqs. 19-20):
#
# $$y_t = r_t\big(\operatorname{diag}(u)\, k_t^\top v_t + S_{t-1}\big), \qquad
#   S_t = \operatorname{diag}(w_t)\, S_{t-1} + k_t^\top v_t,$$
#
# with $w_t = \exp(-\exp(d + \mathrm{lora}(x_t)))\in(0, 1)$ (eq. 16) and the token shift
# made data-dependent too: $\mathrm{ddlerp}(a, b) = a + (b - a)\odot(\mu + \mathrm{lora}(\cdot))$
# (eqs. 11-12). RWKV-4 had one fixed decay per channel and a vector state.
#
# `kernels.wkv6` runs the recurrence with `lax.scan` ("sequential", the reference) and a
# chunked form whose within-chunk work is matrices of decayed $r \cdot k$ products built
# from exact decay ratios (never a growing times a shrinking factor, so no overflow).

# %%
import os

import jax
import jax.numpy as jnp
import numpy as np
from IPython.display import Image, display

import arch
from arch import protocol
from configs.synthetic import mqar
from experiments import plots
from experiments.train import train
from kernels.wkv6 import wkv6

SMOKE = os.environ.get("NOTEBOOK_SMOKE") == "1"  # the test suite runs this at tiny size
WORKDIR = os.environ.get("NOTEBOOK_WORKDIR", "runs/notebook_rwkv6")

# %% [markdown]
# ## The recurrence in NumPy (float64), one sequence


# %%
def wkv6_loop(r, k, v, w, u):
    """r, k, v, w [L, H, N] (w the decay in (0, 1)), u [H, N] -> y [L, H, N]."""
    s = np.zeros((r.shape[1], r.shape[2], r.shape[2]))  # [H, N_key, N_value]
    ys = []
    for t in range(len(r)):
        kv = k[t][:, :, None] * v[t][:, None, :]
        ys.append(np.einsum("hn,hnm->hm", r[t], u[..., None] * kv + s))
        s = w[t][..., None] * s + kv
    return np.stack(ys)


rng = np.random.default_rng(0)
L, H, N = 21, 2, 4
r, k, v = (rng.normal(size=(L, H, N)) for _ in range(3))
w = np.exp(-np.exp(rng.normal(size=(L, H, N))))  # a different decay at every token
u = rng.normal(size=(H, N))
y_loop = wkv6_loop(r, k, v, w, u)

# %% [markdown]
# ## The library's kernels against it
# `wkv6` takes $\log w_t$. The chunk size 8 does not divide 21, and the strong decays
# ($w_t$ near 0) are where a naive chunked form overflows.

# %%
f32 = lambda z: jnp.asarray(z[None], jnp.float32)  # noqa: E731
for impl, options in (("sequential", {}), ("chunked", {"chunk_size": 8})):
    y, _ = wkv6(
        f32(r), f32(k), f32(v), f32(np.log(w)), jnp.asarray(u, jnp.float32), impl=impl, **options
    )
    error = np.abs(np.asarray(y[0]) - y_loop).max()
    print(f"max |wkv6({impl}) - NumPy loop|: {error:.2e}")
    assert error < 1e-4

# %% [markdown]
# ## The block: parallel == recurrent == prefill-then-step
# `arch.build("rwkv6")`: time mixing (ddlerp token shift, LoRA decay, WKV-6, per-head
# GroupNorm, SiLU gate) and RWKV-6's channel mixing. The state is the last input (for
# the token shift) and every head's $S$.

# %%
model = arch.build("rwkv6", vocab_size=64, d_model=32, n_layers=2, head_size=8)
tokens = jax.random.randint(jax.random.key(0), (2, 19), 0, 64)
params = jax.jit(model.init)(jax.random.key(1), tokens)  # jitted: faster than op by op
gaps = protocol.form_differences(model, params, tokens, split=11)
print("max |parallel - recurrent|:", gaps["recurrent"])
print("max |parallel - prefill+step|:", gaps["prefill_then_step"])
assert max(gaps.values()) < 1e-4
print("recurrent state, floats per sequence:", arch.state_size(model))

# %% [markdown]
# ## A short training curve (MQAR, the default job's task)

# %%
config = mqar.get_config("rwkv6,smoke" if SMOKE else "rwkv6")  # smoke: the CI size
run_dir = os.path.join(WORKDIR, "rwkv6")
results = train(config, run_dir)
print("final:", results["final"])
display(Image(plots.learning_curves({"rwkv6": run_dir}, os.path.join(WORKDIR, "curve.png"))))
