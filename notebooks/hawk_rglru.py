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
# # Hawk: the Real-Gated Linear Recurrent Unit (RG-LRU)
#
# Griffin and Hawk (De et al. 2024, section 2.4) use a diagonal, real, gated linear
# recurrence. With the recurrence gate $r_t$ and the input gate $i_t$ computed from $x_t$:
#
# $$r_t = \sigma(W_a x_t + b_a),\quad i_t = \sigma(W_x x_t + b_x),\quad
#   a_t = a^{c\, r_t}\ (c = 8),\quad
#   h_t = a_t \odot h_{t-1} + \sqrt{1 - a_t^2} \odot (i_t \odot x_t)
#   \qquad\text{(eqs. 1-4)}.$$
#
# $a = \sigma(\Lambda)$ is learned per channel and stored as softplus$(\cdot) = -\log a$,
# so $\log a_t = -c\, r_t\, \mathrm{softplus}(\Lambda)$ in log space. The
# $\sqrt{1 - a_t^2}$ factor keeps $h_t$'s scale that of the input however close $a_t$
# is to 1. The recurrence is diagonal and linear, so `kernels.linear_scan` runs it:
# `lax.scan` ("sequential"), `associative_scan`, "chunked" and the Pallas kernel.

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
from kernels.rglru import C, rg_lru

SMOKE = os.environ.get("NOTEBOOK_SMOKE") == "1"  # the test suite runs this at tiny size
WORKDIR = os.environ.get("NOTEBOOK_WORKDIR", "runs/notebook_hawk_rglru")

# %% [markdown]
# ## Eqs. 3-4 in NumPy (float64), after the gates


# %%
def rg_lru_loop(x, i_gate, r_gate, a_param):
    """x, gates [L, D], a_param [D] -> h [L, D], from h_0 = 0 (no reset)."""
    log_a = -C * r_gate * np.log1p(np.exp(a_param))  # eq. 3 in log space
    h, hs = np.zeros(x.shape[1]), []
    for t in range(len(x)):
        a_t = np.exp(log_a[t])
        h = a_t * h + np.sqrt(1 - a_t**2) * (i_gate[t] * x[t])  # eq. 4
        hs.append(h)
    return np.stack(hs)


rng = np.random.default_rng(0)
L, D = 17, 6
sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
x, i_gate, r_gate = (
    rng.normal(size=(L, D)),
    sigmoid(rng.normal(size=(L, D))),
    sigmoid(rng.normal(size=(L, D))),
)
a_param = rng.normal(size=D)
h_loop = rg_lru_loop(x, i_gate, r_gate, a_param)

# %% [markdown]
# ## The library's RG-LRU against it, through every scan implementation

# %%
f32 = lambda z: jnp.asarray(z[None], jnp.float32)  # noqa: E731
for impl in ("sequential", "associative", "chunked"):
    h, _ = rg_lru(f32(x), f32(i_gate), f32(r_gate), jnp.asarray(a_param, jnp.float32), impl=impl)
    error = np.abs(np.asarray(h[0]) - h_loop).max()
    print(f"max |rg_lru({impl}) - NumPy loop|: {error:.2e}")
    assert error < 1e-5

# %% [markdown]
# ## Why $\sqrt{1 - a_t^2}$: the state keeps the input's scale
# For unit-variance inputs and a fixed $a$, the stationary variance of
# $h_t = a h_{t-1} + b\, x_t$ is $b^2 / (1 - a^2)$: with $b = \sqrt{1 - a^2}$ it is 1 for
# every $a$; without it ($b = 1$), it blows up as $a \to 1$.

# %%
noise = rng.normal(size=(4000, 1))
for a in (0.5, 0.9, 0.99, 0.999):
    gates = np.ones_like(noise)
    r = np.full_like(noise, -np.log(a) / (C * np.log1p(np.e)))  # a_t = a with a_param = 1
    h = rg_lru_loop(noise, gates, r, np.ones(1))
    with_factor = h[1000:].std()
    without = with_factor / np.sqrt(1 - a**2)  # the same recurrence with b = 1
    print(f"a = {a}: std of h with the factor {with_factor:.2f}, without {without:.1f}")

# %% [markdown]
# ## The Hawk block: parallel == recurrent == prefill-then-step
# `arch.build("hawk")`: two branches (GeLU gate; short causal conv then RG-LRU),
# multiplied, projected back; Griffin's GeGLU MLP (expansion 3) and RMSNorm pre-norm.
# The first position of a sequence resets the recurrence, as in both official codes.

# %%
model = arch.build("hawk", vocab_size=64, d_model=32, n_layers=2)
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
config = mqar.get_config("hawk,smoke" if SMOKE else "hawk")  # smoke: the CI size
run_dir = os.path.join(WORKDIR, "hawk")
results = train(config, run_dir)
print("final:", results["final"])
display(Image(plots.learning_curves({"hawk": run_dir}, os.path.join(WORKDIR, "curve.png"))))
