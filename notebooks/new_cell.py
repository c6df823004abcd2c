# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Prototype a new recurrent cell: minGRU
#
# minGRU (Feng et al. 2024, "Were RNNs All We Needed?", eq. for minGRU) drops the
# hidden-state dependence of the GRU gates, which makes the recurrence *linear*:
#
# $$z_t = \sigma(W_z x_t),\quad \tilde h_t = W_h x_t,\quad
#   h_t = (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t$$
#
# i.e. $h_t = a_t h_{t-1} + b_t$ with $a_t = 1 - z_t$, $b_t = z_t \tilde h_t$, which an
# associative scan computes in parallel. This notebook writes the cell as a pure
# function, wraps it in the mixer protocol, checks parallel == recurrent with the helper
# the test suite uses, and trains it on MQAR beside built-in architectures.

# %%
import os

import jax
import jax.numpy as jnp
from flax import linen as nn

import arch
from arch import protocol
from arch.registry import ArchSpec
from configs.synthetic import mqar
from experiments import plots
from experiments.train import train

SMOKE = os.environ.get("NOTEBOOK_SMOKE") == "1"  # the test suite runs this at tiny size
WORKDIR = os.environ.get("NOTEBOOK_WORKDIR", "runs/notebook_new_cell")


# %% [markdown]
# ## The cell as a pure function
# The pair $(a, b)$ composes associatively: applying $(a_1, b_1)$ then $(a_2, b_2)$ is
# $(a_2 a_1,\ a_2 b_1 + b_2)$.


# %%
def combine(left, right):
    a_l, b_l = left
    a_r, b_r = right
    return a_r * a_l, a_r * b_l + b_r


def mingru(z, h_tilde, h0):
    """All hidden states for gates z and candidates h_tilde [B, L, D] from h0 [B, D]."""
    a, b = 1.0 - z, z * h_tilde
    a_cum, b_cum = jax.lax.associative_scan(combine, (a, b), axis=1)
    return a_cum * h0[:, None] + b_cum


def mingru_step(z_t, h_tilde_t, h):
    return (1.0 - z_t) * h + z_t * h_tilde_t


# %% [markdown]
# ## The mixer protocol: `__call__`, `init_state`, `step`, `prefill`


# %%
class MinGRU(nn.Module):
    d_model: int
    layer_id: int = 0
    n_layers: int = 1

    def setup(self):
        self.gate = nn.Dense(self.d_model)
        self.candidate = nn.Dense(self.d_model)
        self.out = nn.Dense(self.d_model)

    def __call__(self, x, *, train=False):
        return self.prefill(self.init_state(x.shape[0]), x)[1]

    def init_state(self, batch_size):
        return jnp.zeros((batch_size, self.d_model))

    def prefill(self, h0, x):
        h = mingru(nn.sigmoid(self.gate(x)), self.candidate(x), h0)
        return h[:, -1], self.out(h)

    def step(self, h, x_t):
        h = mingru_step(nn.sigmoid(self.gate(x_t)), self.candidate(x_t), h)
        return h, self.out(h)


spec = ArchSpec(MinGRU, channel="glu", doc="minGRU (Feng et al. 2024)")

# %% [markdown]
# ## Parallel == recurrent (the same check the tests run on every registered mixer)

# %%
model = arch.build(spec, vocab_size=64, d_model=32, n_layers=2)
tokens = jax.random.randint(jax.random.key(0), (2, 17), 0, 64)
params = model.init(jax.random.key(1), tokens)
parallel = model.apply(params, tokens)
recurrent, _ = protocol.recurrent_apply(model, params, tokens)
prefilled, _ = protocol.prefill_then_step(model, params, tokens, split=9)
print("max |parallel - recurrent|:", protocol.max_abs_diff(parallel, recurrent))
print("max |parallel - prefill+step|:", protocol.max_abs_diff(parallel, prefilled))
assert protocol.max_abs_diff(parallel, recurrent) < 1e-5
assert protocol.max_abs_diff(parallel, prefilled) < 1e-5

# %% [markdown]
# ## Train it on MQAR beside built-in architectures (the one training loop)

# %%
config = mqar.get_config()
if SMOKE:
    config.train.steps, config.train.eval_every, config.train.log_every = 4, 4, 2
    config.train.eval_steps, config.train.progress = 1, False
runs, results = {}, {}
for name in ["mingru", "transformer", "mamba"]:
    cfg = config.copy_and_resolve_references()
    cfg.arch = "mamba" if name == "mingru" else name  # only read when no model is given
    model = None
    if name == "mingru":
        model = arch.build(
            spec,
            vocab_size=cfg.task.options.vocab_size,
            d_model=cfg.model.d_model,
            n_layers=cfg.model.n_layers,
        )
    runs[name] = os.path.join(WORKDIR, name)
    results[name] = train(cfg, runs[name], model=model)
    print(name, results[name]["final"])

# %%
path = plots.learning_curves(runs, os.path.join(WORKDIR, "learning_curves.png"))
print("saved", path)
