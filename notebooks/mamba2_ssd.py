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
# # Mamba-2: the state space duality (SSD), written out
#
# Mamba-2 (Dao & Gu 2024, "Transformers are SSMs", section 6) restricts Mamba's
# selective SSM to a scalar-times-identity $A$ per head. Per head, with input
# $x_t \in \mathbb{R}^P$, $B_t, C_t \in \mathbb{R}^N$ and scalars $\Delta_t > 0$, $A < 0$:
#
# $$h_t = e^{\Delta_t A} h_{t-1} + \Delta_t\, x_t B_t^\top, \qquad
#   y_t = h_t C_t + D x_t, \qquad h_t \in \mathbb{R}^{P \times N}.$$
#
# Unrolled, this is a masked "attention" with a decay matrix (the duality, sections 3-5):
#
# $$y = \big(L \circ C B^\top\big)(\Delta \cdot x) + D x, \qquad
#   L_{ts} = \exp\Big(\sum_{s < r \le t} \Delta_r A\Big)\ (s \le t),\ 0\ \text{otherwise}.$$
#
# `kernels.ssd` runs the recurrence with `lax.scan` ("sequential", the reference) and
# the chunked block decomposition ("chunked": the quadratic form within chunks, the
# recurrence between chunk ends; all matmuls). This notebook writes both forms out in
# NumPy (float64), checks the library against them, then trains a small Mamba-2.

# %%
import os

import jax
import numpy as np
from IPython.display import Image, display

import arch
from arch import protocol
from configs.synthetic import mqar
from experiments import plots
from experiments.train import train
from kernels.ssd import ssd

SMOKE = os.environ.get("NOTEBOOK_SMOKE") == "1"  # the test suite runs this at tiny size
WORKDIR = os.environ.get("NOTEBOOK_WORKDIR", "runs/notebook_mamba2_ssd")

# %% [markdown]
# ## The recurrence and its dual, in NumPy
# One sequence, `H` heads sharing one group of $B, C$ (as `n_groups=1`).


# %%
def ssd_recurrent(x, dt, a, b, c):
    """x [L, H, P], dt [L, H], a [H], b/c [L, N] -> y [L, H, P] (D = 0)."""
    length, heads, p = x.shape
    h = np.zeros((heads, p, b.shape[-1]))
    ys = []
    for t in range(length):
        h = np.exp(dt[t] * a)[:, None, None] * h + np.einsum(
            "hp,n->hpn", dt[t, :, None] * x[t], b[t]
        )
        ys.append(h @ c[t])
    return np.stack(ys)


def ssd_dual(x, dt, a, b, c):
    """The same y as one masked matrix product per head: (L o C B^T)(dt x)."""
    cum = np.cumsum(dt * a, axis=0)  # [L, H]: sum of dt_r A up to r = t
    gap = cum[:, None, :] - cum[None, :, :]  # [t, s, H] = sum over s < r <= t
    causal = np.tril(np.ones((len(x), len(x)), bool))[..., None]
    decay = np.where(causal, np.exp(np.where(causal, gap, 0.0)), 0.0)  # L_ts
    scores = (c @ b.T)[..., None] * decay  # [t, s, H]
    return np.einsum("tsh,shp->thp", scores, dt[..., None] * x)


rng = np.random.default_rng(0)
L, H, P, N = 10, 3, 4, 5
x, b, c = rng.normal(size=(L, H, P)), rng.normal(size=(L, N)), rng.normal(size=(L, N))
dt, a = np.log1p(np.exp(rng.normal(size=(L, H)))), -np.exp(rng.normal(size=H))
y_loop, y_dual = ssd_recurrent(x, dt, a, b, c), ssd_dual(x, dt, a, b, c)
print("max |recurrence - dual| (float64):", np.abs(y_loop - y_dual).max())
assert np.abs(y_loop - y_dual).max() < 1e-10

# %% [markdown]
# ## The library's kernels against the written-out form
# The chunk size 4 does not divide the length 10: the padded tail must not leak.

# %%
batch = lambda z: jax.numpy.asarray(z[None], jax.numpy.float32)  # noqa: E731
for impl, options in (("sequential", {}), ("chunked", {"chunk_size": 4})):
    y, _ = ssd(
        batch(x),
        batch(dt),
        jax.numpy.asarray(a, jax.numpy.float32),
        batch(b[:, None]),
        batch(c[:, None]),
        impl=impl,
        **options,
    )
    error = np.abs(np.asarray(y[0]) - y_loop).max()
    print(f"max |ssd({impl}) - NumPy loop|: {error:.2e}")
    assert error < 1e-4

# %% [markdown]
# ## The block: parallel == recurrent == prefill-then-step
# `arch.build("mamba2")` is the Mamba-2 block (in projection, short causal conv, SSD,
# gated RMSNorm, out projection) in Mamba's residual layout. Its parallel form runs the
# chunked kernel; `step` carries the conv window and $h$.

# %%
model = arch.build("mamba2", vocab_size=64, d_model=32, n_layers=2, head_dim=16, chunk_size=8)
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
config = mqar.get_config("mamba2,smoke" if SMOKE else "mamba2")  # smoke: the CI size
run_dir = os.path.join(WORKDIR, "mamba2")
results = train(config, run_dir)
print("final:", results["final"])
display(Image(plots.learning_curves({"mamba2": run_dir}, os.path.join(WORKDIR, "curve.png"))))
