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
# # Mixture of Experts: a channel mixer after any sequence mixer
#
# A MoE feed-forward (Shazeer et al. 2017; GShard, Lepikhin et al. 2021; Switch, Fedus
# et al. 2022; Mixtral, Jiang et al. 2024) routes each token to $k$ of $E$ experts:
#
# $$p = \operatorname{softmax}(x W_r),\qquad
#   y = \sum_{e \in \mathcal{T}} \frac{p_e}{\sum_{e' \in \mathcal{T}} p_{e'}}\,
#   \mathrm{FFN}_e(x),\qquad \mathcal{T} = \operatorname{top}_k(p),$$
#
# $$\mathrm{FFN}_e(x) = W_2^e\big(\mathrm{SiLU}(W_1^e x) \odot W_3^e x\big)$$
#
# (Mixtral's renormalised top-$k$ and SwiGLU experts; top-1 keeps the raw $p_e$, as
# Switch). Training adds Switch's load-balancing loss $E \sum_e f_e P_e$ (eq. 4: $f_e$
# the share of tokens sent to $e$, $P_e$ its mean router probability) and ST-MoE's
# router z-loss. With a capacity factor $c$ each expert takes at most
# $\lceil c \cdot T k / E\rceil$ tokens per batch; the rest are dropped (GShard).
#
# In this code base the MoE is a *channel* mixer: `channel="moe"` puts it after any
# sequence mixer, and `arch.build("moe_mamba")` is MoE-Mamba (Pioro et al. 2024).

# %%
import os

import jax
import numpy as np
from IPython.display import Image, display

import arch
from arch import protocol
from arch.moe import MoE
from configs.synthetic import mqar
from experiments import plots
from experiments.train import train

SMOKE = os.environ.get("NOTEBOOK_SMOKE") == "1"  # the test suite runs this at tiny size
WORKDIR = os.environ.get("NOTEBOOK_WORKDIR", "runs/notebook_moe")

# %% [markdown]
# ## The routing written out in NumPy, against the layer

# %%
D, E, K, T = 8, 4, 2, 12
layer = MoE(D, n_experts=E, top_k=K, hidden=16)
x = jax.random.normal(jax.random.key(0), (1, T, D))
variables = jax.jit(layer.init)(jax.random.key(1), x)  # jitted: faster than op by op
p = jax.tree.map(np.asarray, variables["params"])
silu = lambda z: z / (1 + np.exp(-z))  # noqa: E731


def moe_numpy(tokens):
    logits = tokens @ p["router"]["kernel"]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out = np.zeros_like(tokens)
    for t, token in enumerate(tokens):
        chosen = np.argsort(-probs[t])[:K]
        weights = probs[t, chosen] / probs[t, chosen].sum()
        for e, w in zip(chosen, weights, strict=True):
            out[t] += w * (silu(token @ p["w1"][e]) * (token @ p["w3"][e])) @ p["w2"][e]
    return out, probs


expected, probs = moe_numpy(np.asarray(x[0], np.float64))
y, sown = jax.jit(lambda v, x: layer.apply(v, x, mutable=["losses", "moe_stats"]))(variables, x)
print("max |layer - NumPy|:", np.abs(np.asarray(y[0]) - expected).max())
assert np.abs(np.asarray(y[0]) - expected).max() < 1e-5

# %% [markdown]
# ## The Switch load-balancing loss by hand
# $f_e$: each token's $k$ choices count $1/k$ each; $P_e$: the mean probability.

# %%
top = np.argsort(-probs, axis=-1)[:, :K]
f = np.array([(top == e).sum() for e in range(E)]) / (T * K)
balance = E * np.sum(f * probs.mean(0))
z_loss = np.mean(np.log(np.exp(np.asarray(x[0]) @ p["router"]["kernel"]).sum(-1)) ** 2)
by_hand = layer.balance_coef * balance + layer.z_loss_coef * z_loss
print("expert shares f_e:", f, " balance loss:", round(balance, 4), "(1.0 when uniform)")
print("sown auxiliary loss:", float(sown["losses"]["moe"][0]), " by hand:", by_hand)
assert abs(float(sown["losses"]["moe"][0]) - by_hand) < 1e-5

# %% [markdown]
# ## Capacity: full experts drop tokens
# With $c = 0.5$ each expert has room for half its fair share: a dropped assignment
# contributes nothing (the residual connection carries the token on).

# %%
for factor in (0.5, 1.0, 2.0):
    _, stats = MoE(D, n_experts=E, top_k=K, hidden=16, capacity_factor=factor).apply(
        variables, x, mutable=["moe_stats"]
    )
    print(f"capacity factor {factor}: dropped share {float(stats['moe_stats']['dropped'][0]):.2f}")

# %% [markdown]
# ## MoE-Mamba: parallel == recurrent == prefill-then-step
# The MoE is position-wise, so the recurrent form is Mamba's, and (without a capacity)
# the step form routes each token exactly as the parallel form does.

# %%
model = arch.build("moe_mamba", vocab_size=64, d_model=32, n_layers=2, d_state=8)
tokens = jax.random.randint(jax.random.key(0), (2, 19), 0, 64)
params = jax.jit(model.init)(jax.random.key(1), tokens)  # jitted: faster than op by op
gaps = protocol.form_differences(model, params, tokens, split=11)
print("max |parallel - recurrent|:", gaps["recurrent"])
print("max |parallel - prefill+step|:", gaps["prefill_then_step"])
assert max(gaps.values()) < 1e-4

# %% [markdown]
# ## A short training curve, with the experts' utilisation
# The loop adds the sown losses to the cross-entropy and logs `moe_aux_loss`,
# `moe_max_expert_fraction` (1/E when balanced) and `moe_dropped`.

# %%
config = mqar.get_config("moe_mamba,smoke" if SMOKE else "moe_mamba")  # smoke: the CI size
run_dir = os.path.join(WORKDIR, "moe_mamba")
results = train(config, run_dir)
print("final:", results["final"])
print("busiest expert's share:", results["final"]["moe_max_expert_fraction"])
display(Image(plots.learning_curves({"moe_mamba": run_dir}, os.path.join(WORKDIR, "curve.png"))))
