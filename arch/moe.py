"""A Mixture-of-Experts channel mixer, usable after any sequence mixer (``channel="moe"``).

Routing (Shazeer et al. 2017; Switch Transformer, Fedus et al. 2022; GShard, Lepikhin et
al. 2021; Mixtral, Jiang et al. 2024):

- router logits l = x W_r (no bias); p = softmax(l); each token goes to its ``top_k``
  experts, weighted by their probabilities renormalised over the chosen ones (Mixtral's
  ``MixtralSparseMoeBlock``; top-1 keeps the raw probability, as Switch);
- experts: SwiGLU feed-forwards W_2(SiLU(W_1 x) * W_3 x) (Mixtral), hidden width
  ``expand`` x d_model x 2/3 (an MLP's parameter count per expert) unless ``hidden`` is set;
- ``capacity_factor``: None computes every token's chosen experts exactly (no drop);
  c > 0 gives each expert ceil(c * tokens * top_k / n_experts) slots per batch, filled
  in token order for the first choice, then the second (GShard), the rest dropped;
- losses (sown into the ``"losses"`` collection, which the training loop adds to the
  cross-entropy): Switch's load balancing n_experts * sum_e f_e P_e (eq. 4; f_e the
  fraction of routed slots, P_e the mean router probability) times ``balance_coef``,
  and ST-MoE's router z-loss mean(logsumexp(l)^2) (Zoph et al. 2022, eq. 5) times
  ``z_loss_coef``; the per-expert fraction of tokens is sown into ``"moe_stats"``.

Position-wise, so its recurrent form is itself (``NoState``); with a capacity the
parallel and step forms differ by construction (a batch of one token never overflows).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import linen as nn

from arch.channel import PositionWise, gpt2_inits


def expert_positions(choice, n_experts: int):
    """``choice`` [T, k] expert ids -> (one-hot [T, k, E], slot of each assignment [T, k]).

    Slots are filled choice-major: every token's first choice before any second choice
    (GShard's priority), in token order within a choice.
    """
    onehot = jax.nn.one_hot(choice, n_experts, dtype=jnp.int32)  # [T, k, E]
    order = jnp.swapaxes(onehot, 0, 1).reshape(-1, n_experts)  # [k * T, E], choice-major
    slots = jnp.cumsum(order, axis=0) - order  # earlier assignments to the same expert
    slots = jnp.swapaxes(slots.reshape(choice.shape[1], choice.shape[0], n_experts), 0, 1)
    return onehot, (slots * onehot).sum(-1)


class MoE(PositionWise):
    d_model: int
    layer_id: int = 0
    n_layers: int = 1
    n_experts: int = 8
    top_k: int = 2
    expand: int = 4
    hidden: int | None = None
    capacity_factor: float | None = None
    balance_coef: float = 0.01  # Switch Transformer's alpha
    z_loss_coef: float = 0.001  # ST-MoE's c_z

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.top_k <= self.n_experts:
            raise ValueError(
                f"MoE: need 1 <= top_k <= n_experts, got top_k={self.top_k}, "
                f"n_experts={self.n_experts}"
            )
        if self.capacity_factor is not None and self.capacity_factor <= 0:
            raise ValueError(
                f"MoE: capacity_factor must be > 0 or None, got {self.capacity_factor}"
            )

    @property
    def width(self) -> int:
        return self.hidden or int(2 * self.expand * self.d_model / 3)

    def weight_uses(self) -> dict[str, float]:
        """Each token uses top_k of the n_experts experts' weights (Switch Transformer's
        and Mixtral's "active parameters"); the router is used by every token. The exact
        (no capacity) form computes every expert and discards the rest: that extra work
        is not model FLOPs (arch/flops.py)."""
        return dict.fromkeys(("w1", "w2", "w3"), self.top_k / self.n_experts)

    def setup(self):
        e, d, h = self.n_experts, self.d_model, self.width
        w_in, w_out = gpt2_inits(self.n_layers)
        self.router = nn.Dense(e, use_bias=False, kernel_init=nn.initializers.normal(0.02))
        self.w1 = self.param("w1", w_in, (e, d, h))  # gate
        self.w3 = self.param("w3", w_in, (e, d, h))  # up
        self.w2 = self.param("w2", w_out, (e, h, d))  # down

    def _experts(self, x):
        """[E, S, D] -> [E, S, D]: each expert's SwiGLU on its own tokens."""
        gate = nn.silu(jnp.einsum("esd,edh->esh", x, self.w1))
        return jnp.einsum("esh,ehd->esd", gate * jnp.einsum("esd,edh->esh", x, self.w3), self.w2)

    def __call__(self, x, *, train: bool = False):
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])  # [T, D]
        logits = self.router(tokens).astype(jnp.float32)  # [T, E]
        probs = jax.nn.softmax(logits, axis=-1)
        weights, choice = jax.lax.top_k(probs, self.top_k)  # [T, k]
        if self.top_k > 1:
            weights = weights / weights.sum(-1, keepdims=True)
        onehot, slot = expert_positions(choice, self.n_experts)
        if self.capacity_factor is None:  # exact: every expert on every token, then select
            outs = self._experts(jnp.broadcast_to(tokens, (self.n_experts, *tokens.shape)))
            combine = (weights[..., None] * onehot).sum(1)  # [T, E]
            y = jnp.einsum("te,etd->td", combine.astype(x.dtype), outs)
            kept = onehot
        else:
            capacity = math.ceil(
                self.capacity_factor * tokens.shape[0] * self.top_k / self.n_experts
            )
            kept = onehot * (slot < capacity)[..., None]
            slots = jax.nn.one_hot(slot, capacity, dtype=x.dtype)  # [T, k, C] (over: zeros)
            dispatch = jnp.einsum("tke,tkc->tec", kept.astype(x.dtype), slots)  # [T, E, C]
            combine = jnp.einsum(
                "tke,tkc,tk->tec", kept.astype(x.dtype), slots, weights.astype(x.dtype)
            )
            outs = self._experts(jnp.einsum("tec,td->ecd", dispatch, tokens))
            y = jnp.einsum("tec,ecd->td", combine, outs)
        routed = onehot.sum(1).astype(jnp.float32)  # [T, E]: 1 where the token chose e
        fraction = routed.mean(0) / self.top_k  # f_e: share of routed assignments
        balance = self.n_experts * jnp.sum(fraction * probs.mean(0))
        z_loss = jnp.mean(jax.nn.logsumexp(logits, axis=-1) ** 2)
        if not self.is_initializing():  # init returns parameters only
            self.sow("losses", "moe", self.balance_coef * balance + self.z_loss_coef * z_loss)
            self.sow("moe_stats", "expert_fraction", fraction)
            self.sow("moe_stats", "dropped", 1.0 - kept.sum() / onehot.sum())
        return y.reshape(shape)
