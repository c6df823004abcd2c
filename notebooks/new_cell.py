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
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn

import arch
from arch import protocol
from configs.synthetic import mqar
from experiments import bench_models
from experiments.compare import compare
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
# The state is a NamedTuple, so `step` reads as what it carries. A cell whose parameters
# need their own optimizer rule declares it beside them, e.g.
# `PARAM_RULES: ClassVar = {"decay": arch.params.SSM}`; minGRU has only Dense layers.


# %%
class MinGRUState(NamedTuple):
    h: jax.Array  # [batch, d_model]: the hidden state h_{t-1}


class MinGRU(nn.Module):
    d_model: int
    layer_id: int = 0
    n_layers: int = 1

    def setup(self):
        self.gate = nn.Dense(self.d_model)  # W_z
        self.candidate = nn.Dense(self.d_model)  # W_h
        self.out = nn.Dense(self.d_model)

    def __call__(self, x, *, train=False):
        return self.prefill(self.init_state(x.shape[0]), x)[1]

    def init_state(self, batch_size):
        return MinGRUState(jnp.zeros((batch_size, self.d_model)))

    def prefill(self, state, x):
        h = mingru(nn.sigmoid(self.gate(x)), self.candidate(x), state.h)
        return MinGRUState(h[:, -1]), self.out(h)

    def step(self, state, x_t):
        h = mingru_step(nn.sigmoid(self.gate(x_t)), self.candidate(x_t), state.h)
        return MinGRUState(h), self.out(h)


# One call makes "mingru" a name like the built-ins for build, the configs, train,
# compare and bench (replace=True: re-running this cell redefines it).
arch.register(
    "mingru", arch.ArchSpec(MinGRU, channel="glu", doc="minGRU (Feng et al. 2024)"), replace=True
)

# %% [markdown]
# ## Parallel == recurrent (the same check the tests run on every registered mixer)

# %%
model = arch.build("mingru", vocab_size=64, d_model=32, n_layers=2)
tokens = jax.random.randint(jax.random.key(0), (2, 17), 0, 64)
params = jax.jit(model.init)(jax.random.key(1), tokens)  # jitted: faster than op by op
gaps = protocol.form_differences(model, params, tokens, split=9)
print("max |parallel - recurrent|:", gaps["recurrent"])
print("max |parallel - prefill+step|:", gaps["prefill_then_step"])
assert max(gaps.values()) < 1e-5

# %% [markdown]
# ## Train it by name, on its own and beside built-in architectures (the one loop)

# %%
# The config file accepts the registered name (",smoke": the size CI runs).
config = mqar.get_config("mingru,smoke" if SMOKE else "mingru")
results = train(config, os.path.join(WORKDIR, "compare", "mingru"))
print("mingru:", results["final"])

# compare() reads the finished mingru run back from its results.json and trains the rest.
builtins = ["s4d"] if SMOKE else ["transformer", "mamba"]
rows = compare(config, ["mingru", *builtins], os.path.join(WORKDIR, "compare"))
for row in rows:
    print(row)

# %% [markdown]
# ## Benchmark it beside the built-ins (train-step time against length)

# %%
lengths = [16] if SMOKE else [256, 1024, 4096]
bench_rows = bench_models.bench_train(
    ["mingru", *builtins], lengths, os.path.join(WORKDIR, "bench"), repeats=1 if SMOKE else 3
)
