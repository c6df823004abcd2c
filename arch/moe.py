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
- ``dispatch`` (exact form only): "sorted" (default) is MegaBlocks' dropless dispatch
  (Gale et al. 2023, "MegaBlocks: Efficient Sparse Training with Mixture-of-Experts",
  arXiv:2211.15841; its block-sparse formulation) in plain JAX with static shapes: the
  tokens x top_k assignments are stable-sorted by expert, each expert's run is padded to
  a whole number of blocks of ``block_size`` rows (None: ``auto_block_size``), the
  tokens are gathered into [blocks, block_size, D], each block multiplies by its own
  expert's weights (gathered per block: a batched matmul standing in for MegaBlocks'
  block-sparse one), and the outputs, times their combine weights, are summed back per
  token. Work and activations are those of the routed assignments plus fewer than
  n_experts x block_size padding rows. "dense" runs every expert on every token and keeps
  the chosen ones: n_experts / top_k times the useful work and an [n_experts, tokens,
  hidden] activation (the reference the sorted form is tested against);
- losses (sown into the ``"losses"`` collection, which the training loop adds to the
  cross-entropy): Switch's load balancing n_experts * sum_e f_e P_e (eq. 4; f_e the
  fraction of routed slots, P_e the mean router probability) times ``balance_coef``,
  and ST-MoE's router z-loss mean(logsumexp(l)^2) (Zoph et al. 2022, eq. 5) times
  ``z_loss_coef``; the per-expert fraction of tokens is sown into ``"moe_stats"``.

Position-wise, so its recurrent form is itself (``NoState``); with a capacity the
parallel and step forms differ by construction (a batch of one token never overflows).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.ad_checkpoint import checkpoint_name

from arch.channel import PositionWise, gpt2_inits

DISPATCHES = ("sorted", "dense")


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


def auto_block_size(assignments: int, n_experts: int, lo: int = 8, hi: int = 512) -> int:
    """The sorted dispatch's block (rows): the power of two nearest (in log2)
    assignments / (4 n_experts), clamped to [lo, hi].

    Two costs pull in opposite directions. Padding: each expert's run is rounded up to a
    whole block, so the static layout holds at most n_experts * (bs - 1) rows beyond the
    routed ones; a block near a quarter of an expert's fair share keeps that under
    sqrt(2)/4 ~ 35% of the routed rows (about half that on average). Gathered weights:
    every block carries a copy of its expert's three matrices, assignments / bs +
    n_experts blocks, i.e. at most (4 sqrt(2) + 1) ~ 6.7x the experts' own weights (and
    d_model / bs times the routed activations); smaller blocks would cut the padding but
    multiply these copies. Both bounds hold where the clamp does not bind: the lower end
    keeps tiny batches (decoding) at one 8-row block per expert, the upper end stops a
    huge batch from padding experts by up to 511 rows each. At 16K tokens, 8 experts,
    top-1, d_model 256 this gives 512, the fastest of 128-1024 on a CPU.
    """
    target = max(assignments / (4 * n_experts), 1.0)
    return int(min(hi, max(lo, 2 ** round(math.log2(target)))))


def max_blocks(assignments: int, n_experts: int, bs: int) -> int:
    """Static bound on sum_e ceil(count_e / bs) over experts with sum_e count_e =
    assignments: at most min(n_experts, assignments) experts are non-empty and each
    wastes at most bs - 1 rows of its last block."""
    return (assignments + min(n_experts, assignments) * (bs - 1)) // bs


def sorted_layout(choice, n_experts: int, bs: int):
    """Expert ids ``choice`` [T, k] -> the block-padded, expert-sorted layout.

    Returns (row_token [n_blocks * bs]: the token each row reads, T for a padding row;
    position [T * k]: each assignment's row, in ``choice.reshape(-1)`` order;
    block_expert [n_blocks]: the expert of each block, blocks past the used ones get
    n_experts - 1 and hold only padding rows).
    """
    n_tokens, k = choice.shape
    assignments = n_tokens * k
    n_blocks = max_blocks(assignments, n_experts, bs)
    expert = choice.reshape(-1)  # token-major: assignment a belongs to token a // k
    order = jnp.argsort(expert, stable=True)  # by expert, token order within one
    sorted_expert = expert[order]
    counts = jnp.bincount(expert, length=n_experts)  # [E]
    blocks = (counts + bs - 1) // bs  # per expert, rounded up
    start = jnp.cumsum(counts) - counts  # first sorted index of each expert
    block_end = jnp.cumsum(blocks)  # one past each expert's last block
    padded_start = (block_end - blocks) * bs  # first row of each expert
    dest = padded_start[sorted_expert] + jnp.arange(assignments) - start[sorted_expert]
    row_token = jnp.full(n_blocks * bs, n_tokens, jnp.int32).at[dest].set(order // k)
    position = jnp.zeros(assignments, jnp.int32).at[order].set(dest)
    block_expert = (block_end[None, :] <= jnp.arange(n_blocks)[:, None]).sum(-1)
    return row_token, position, jnp.minimum(block_expert, n_experts - 1)


@functools.partial(
    jax.checkpoint, policy=jax.checkpoint_policies.save_only_these_names("moe_gate", "moe_up")
)
def _block_swiglu(rows, block_expert, w1, w3, w2):
    """Each block's SwiGLU with its own expert's weights, [n_blocks, bs, D] -> same.

    The backward keeps the two matmul outputs and gathers the per-block weight copies
    again rather than storing them: they are n_blocks / n_experts times the weights per
    call, and a time-chunked step (``arch/time_chunks.py``) makes one call per chunk.
    Measured, forward + backward of one layer over 16,384 tokens (d_model 256, 8
    experts, top-1, 2-core CPU): one call 0.34 s and 398 MiB either way; in 16 chunks
    1.02 s and 1,725 MiB when stored, 0.56 s and 273 MiB regathered.
    """
    gate = checkpoint_name(jnp.einsum("bsd,bdh->bsh", rows, w1[block_expert]), "moe_gate")
    up = checkpoint_name(jnp.einsum("bsd,bdh->bsh", rows, w3[block_expert]), "moe_up")
    return jnp.einsum("bsh,bhd->bsd", nn.silu(gate) * up, w2[block_expert])


def sorted_experts(tokens, choice, weights, w1, w3, w2, bs: int):
    """Dropless MoE SwiGLU (MegaBlocks' formulation with static shapes).

    ``tokens`` [T, D], ``choice`` and ``weights`` [T, k], expert weights w1/w3 [E, D, H],
    w2 [E, H, D] -> [T, D] = sum_j weights[t, j] * expert_{choice[t, j]}(tokens[t]).
    """
    n_tokens, d = tokens.shape
    row_token, position, block_expert = sorted_layout(choice, w1.shape[0], bs)
    rows = jnp.take(tokens, row_token, axis=0, mode="fill", fill_value=0)
    rows = rows.reshape(-1, bs, d)  # [n_blocks, bs, D], padding rows zero
    out = _block_swiglu(rows, block_expert, w1, w3, w2).reshape(-1, d)
    # Each assignment reads its own row back (the transpose of the dispatch gather), and
    # a token's k assignments are adjacent, so the combine is a weighted sum over k.
    picked = out[position].reshape(n_tokens, choice.shape[1], d)
    return jnp.einsum("tkd,tk->td", picked, weights.astype(tokens.dtype))


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
    dispatch: str = "sorted"  # exact form: "sorted" (MegaBlocks) or "dense" (all experts)
    block_size: int | None = None  # sorted dispatch's rows per block; None: auto_block_size

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
        if self.dispatch not in DISPATCHES:
            raise ValueError(
                f"MoE: unknown dispatch {self.dispatch!r}; valid: {', '.join(DISPATCHES)}"
            )
        if self.block_size is not None and self.block_size < 1:
            raise ValueError(f"MoE: block_size must be >= 1 or None, got {self.block_size}")

    @property
    def width(self) -> int:
        return self.hidden or int(2 * self.expand * self.d_model / 3)

    def weight_uses(self) -> dict[str, float]:
        """Each token uses top_k of the n_experts experts' weights (Switch Transformer's
        and Mixtral's "active parameters"); the router is used by every token. The exact
        (no capacity) form with ``dispatch="dense"`` computes every expert and discards
        the rest, and the sorted dispatch computes up to n_experts * block_size padding
        rows: that extra work is not model FLOPs (arch/flops.py)."""
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
        if self.capacity_factor is None and self.dispatch == "sorted":
            bs = self.block_size or auto_block_size(choice.size, self.n_experts)
            y = sorted_experts(tokens, choice, weights, self.w1, self.w3, self.w2, bs)
            kept = onehot
        elif self.capacity_factor is None:  # dense: every expert on every token, then select
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
