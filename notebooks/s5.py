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
# # S5: one MIMO diagonal state space, run by an associative scan
#
# S5 (Smith, Warrington & Linderman 2023, "Simplified State Space Layers for Sequence
# Modeling") replaces S4's bank of H single-input SSMs with one multi-input,
# multi-output SSM of state size P, diagonalised: with $\Lambda$ diagonal (complex),
#
# $$x_k = \bar\Lambda x_{k-1} + \bar B u_k, \qquad y_k = \operatorname{Re}(\tilde C x_k) + D u_k
#   \qquad\text{(eq. 4)},$$
#
# discretised by zero-order hold with one step size per state (eq. 6):
# $\bar\Lambda = e^{\Lambda\Delta}$, $\bar B = \Lambda^{-1}(\bar\Lambda - I)\tilde B$.
# $\Lambda$ and $V$ come from the eigen-decomposition of HiPPO-N (the normal part of
# HiPPO-LegS), $\tilde B = V^{-1}B$, $\tilde C = CV$. Because $\bar\Lambda$ is diagonal,
# the recurrence is elementwise and `jax.lax.associative_scan` computes it in parallel
# (section 3.2): that is S5's own parallel form, "associative" in `kernels.s5`.

# %%
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, display

import arch
from arch import protocol
from arch.mixers.s5 import hippo_n_blocks
from configs.synthetic import mqar
from experiments import plots
from experiments.train import train
from kernels.s5 import discretise, s5_scan

SMOKE = os.environ.get("NOTEBOOK_SMOKE") == "1"  # the test suite runs this at tiny size
WORKDIR = os.environ.get("NOTEBOOK_WORKDIR", "runs/notebook_s5")
os.makedirs(WORKDIR, exist_ok=True)

# %% [markdown]
# ## HiPPO-N's eigenvalues: the initial $\Lambda$
# Real parts all $-1/2$, imaginary parts spreading out: one of each conjugate pair is
# kept (the output takes twice the real part). With `blocks=J`, J copies of a size-P/J
# HiPPO-N sit on the diagonal (the paper's block-diagonal initialisation).

# %%
fig, ax = plt.subplots(figsize=(5, 3.5))
for blocks, marker in ((1, "o"), (4, "x")):
    lam, _ = hippo_n_blocks(64, blocks)
    ax.scatter(lam.real, lam.imag, marker=marker, label=f"P=64, J={blocks}")
ax.set(xlabel="Re Lambda", ylabel="Im Lambda", title="HiPPO-N eigenvalues (one per pair)")
ax.legend()
fig.savefig(os.path.join(WORKDIR, "eigenvalues.png"), dpi=100, bbox_inches="tight")
plt.close(fig)
display(Image(os.path.join(WORKDIR, "eigenvalues.png")))

# %% [markdown]
# ## Discretise and scan, written out in NumPy (complex128)

# %%
rng = np.random.default_rng(0)
P, H, L = 8, 3, 13
lam, v = hippo_n_blocks(P, 1)  # [P/2], [P, P/2]
b_tilde = v.conj().T @ rng.normal(size=(P, H))  # V^-1 B: [P/2, H]
c_tilde = rng.normal(size=(H, P)) @ v  # C V: [H, P/2]
step = np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), size=P // 2))
u = rng.normal(size=(L, H))

lam_bar = np.exp(lam * step)  # ZOH, eq. 6
b_bar = ((lam_bar - 1) / lam)[:, None] * b_tilde
x_k, y_loop = np.zeros(P // 2, complex), []
for k in range(L):
    x_k = lam_bar * x_k + b_bar @ u[k]
    y_loop.append(2 * (c_tilde @ x_k).real)  # the conjugate half doubles the real part
y_loop = np.stack(y_loop)

# %% [markdown]
# ## The library against it: every implementation of the scan

# %%
lam_bar_j, b_bar_j = discretise(
    jnp.asarray(lam, jnp.complex64),
    jnp.asarray(b_tilde, jnp.complex64),
    jnp.asarray(step, jnp.float32),
)
print("max |Lambda_bar - NumPy|:", float(jnp.abs(lam_bar_j - lam_bar).max()))
bu = jnp.einsum("lh,ph->lp", jnp.asarray(u, jnp.complex64), b_bar_j)[None]
for impl in ("sequential", "associative", "chunked"):
    xs, _ = s5_scan(lam_bar_j, bu, impl=impl)
    y = 2 * jnp.einsum("lp,hp->lh", xs[0], jnp.asarray(c_tilde, jnp.complex64)).real
    error = np.abs(np.asarray(y) - y_loop).max()
    print(f"max |s5_scan({impl}) - NumPy loop|: {error:.2e}")
    assert error < 1e-4

# %% [markdown]
# ## The layer: parallel == recurrent == prefill-then-step
# `arch.build("s5")`: the S5 layer with its output stage (GELU then a half-GLU by
# default), no separate channel mixer. The state is $x_k$, one of each conjugate pair.

# %%
model = arch.build("s5", vocab_size=64, d_model=32, n_layers=2, d_state=16)
tokens = jax.random.randint(jax.random.key(0), (2, 19), 0, 64)
params = jax.jit(model.init)(jax.random.key(1), tokens)  # jitted: faster than op by op
gaps = protocol.form_differences(model, params, tokens, split=11)
print("max |parallel - recurrent|:", gaps["recurrent"])
print("max |parallel - prefill+step|:", gaps["prefill_then_step"])
assert max(gaps.values()) < 1e-4
print("recurrent state, floats per sequence:", arch.state_size(model))

# %% [markdown]
# ## A short training curve (MQAR, the default job's task)
# The LRA recipes of the paper are `configs/lra/<task>.py:s5` (`arch.lra_recipes.S5`).

# %%
config = mqar.get_config("s5,smoke" if SMOKE else "s5")  # smoke: the CI size
run_dir = os.path.join(WORKDIR, "s5")
results = train(config, run_dir)
print("final:", results["final"])
display(Image(plots.learning_curves({"s5": run_dir}, os.path.join(WORKDIR, "curve.png"))))
