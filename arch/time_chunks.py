"""A causal language model's logits computed chunk by chunk along time.

``apply_in_time_chunks(model, variables, tokens, chunk)`` runs ``model.prefill`` over
consecutive chunks of ``chunk`` tokens inside one ``lax.scan``, each chunk starting from
the state the previous one left, so the logits (and their gradients) are those of one
``model.apply`` over the whole sequence: the mixer protocol's ``prefill`` continues a
state exactly (``arch/protocol.py``; tested for every causal architecture).

Why: on a CPU, the element-wise work between the matmuls (norms, gates, token shift, the
activations' gradients) runs from the cache while a layer's tensors fit in it and from
memory once they do not. Measured on the 2-core development CPU (docs/benchmarks.md):
the gradient of Mamba's input projection plus a tanh costs 10 us per token at 1,024
tokens and 25 us at 16,384. Chunks keep each layer's working set cache-sized.

``recompute`` (the rematerialisation of each chunk, ``jax.checkpoint``) decides what the
backward pass reads back from memory. ``"none"`` saves every activation the backward
needs, as one call does. ``"dots"`` (the default) saves only the outputs of the matmuls
without batch dimensions (the dense layers; batched and complex products are recomputed
too) and recomputes the chunk's element-wise work in its backward, while the chunk's
tensors are in the cache again; ``"all"`` saves only the state entering each chunk.
Measured on that CPU (docs/benchmarks.md): out of the cache an element-wise pass over
float32 runs at 6.6 GB/s against 38 in it, so recomputing costs less than reading the
result back. Hawk's 16K training step at batch 2: 7.32 s in one call, 7.17 s in chunks
of 512 saving everything, 4.87 s with ``"dots"`` (1.4 GiB against 6.4) and 4.91 s with
``"all"`` (0.2 GiB). Recomputed FLOPs are not model FLOPs: MFU counts only the time
they save.

It can pay only where ``prefill`` is the same computation as the parallel call: the
recurrent mixers whose state does not grow with the context. S4 and S4D train by an FFT
convolution but prefill by a scan, and the Transformer's prefill attends to a
``max_len`` KV cache. ``run.py bench train --time_chunk N,M`` times each architecture
both ways (and each chunk length) and keeps the fastest.

Layers that sow into mutable collections (MoE's auxiliary losses and statistics) sow once
per chunk; their values are averaged over the chunks, so a load-balancing loss is the
mean of per-chunk losses, as it is over micro-batches in the official MoE codes
(docs/fidelity.md). Nothing here applies dropout: ``prefill`` is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from kernels.chunking import from_chunks, to_chunks


def _real_dots_saveable(prim, *avals, **params) -> bool:
    """JAX's ``dots_with_no_batch_dims_saveable`` for real products only. A complex one
    (S5's) is recomputed: JAX's remat puts a ``reduce_precision`` on every saved
    residual, which refuses complex dtypes (jax 0.10, ``_insert_reduce_precision`` in
    jax/_src/ad_checkpoint.py)."""
    if any(jnp.issubdtype(getattr(a, "dtype", None), jnp.complexfloating) for a in avals):
        return False
    return jax.checkpoint_policies.dots_with_no_batch_dims_saveable(prim, *avals, **params)


# What each chunk's forward keeps for the backward (None: everything, no jax.checkpoint).
RECOMPUTE = {
    "none": None,
    "dots": _real_dots_saveable,
    "all": jax.checkpoint_policies.nothing_saveable,
}


def check_time_chunk(chunk: int) -> None:
    """A clear error for a chunk that is not a positive int."""
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
        raise ValueError(f"time_chunk={chunk!r} must be a positive int (e.g. 128), or 0 for off")


def check_recompute(recompute: str) -> None:
    """A clear error for a recompute policy that is not in ``RECOMPUTE``."""
    if recompute not in RECOMPUTE:
        raise ValueError(f"recompute={recompute!r} is not one of {sorted(RECOMPUTE)}")


def apply_in_time_chunks(
    model,
    variables,
    tokens: Int[Array, "batch length"],
    chunk: int,
    *,
    mutable: Sequence[str] = (),
    recompute: str = "dots",
) -> Float[Array, "batch length vocab"] | tuple[Float[Array, "batch length vocab"], dict]:
    """The logits of ``model.apply(variables, tokens)`` from ``prefill`` over time chunks.

    Whole chunks go through one ``lax.scan``; a length that ``chunk`` does not divide
    ends with one shorter ``prefill``. A sequence no longer than ``chunk`` is one plain
    ``model.apply``. ``mutable``: collections the layers may sow into (e.g. ``("losses",
    "moe_stats")``); when given, returns ``(logits, sown)`` as ``model.apply(...,
    mutable=...)`` does, each sown value averaged over the chunks, weighted by their
    lengths. ``recompute``: what each chunk saves for the backward (``RECOMPUTE``; see
    the module docstring); the numbers are the same.
    """
    batch, length = tokens.shape
    check_time_chunk(chunk)
    check_recompute(recompute)
    mutable = list(mutable)
    if length <= chunk:
        return model.apply(variables, tokens, mutable=mutable or False)
    whole, rest = divmod(length, chunk)

    def prefill(state, tokens_c):
        # prefill keeps init_state's dtypes (the scan's carry needs that; every mixer's
        # is checked under bfloat16 in tests/arch/test_time_chunks.py).
        (state, logits), sown = model.apply(
            variables, state, tokens_c, method="prefill", mutable=mutable
        )
        return state, (logits, sown)

    scanned = last = prefill
    if (policy := RECOMPUTE[recompute]) is not None:
        # Inside a scan, CSE cannot merge the recomputation with the forward (JAX's docs).
        scanned = jax.checkpoint(prefill, policy=policy, prevent_cse=False)
        last = jax.checkpoint(prefill, policy=policy)

    state = model.apply(variables, batch, method="init_state")
    state, (logits, sown) = jax.lax.scan(
        scanned, state, to_chunks(tokens[:, : whole * chunk], chunk)
    )
    logits = from_chunks(logits)  # [whole, B, chunk, V] -> [B, whole * chunk, V]
    sown = jax.tree.map(lambda v: v.mean(0) * (whole * chunk / length), sown)
    if rest:
        _, (end, end_sown) = last(state, tokens[:, whole * chunk :])
        logits = jnp.concatenate([logits, end], axis=1)
        sown = jax.tree.map(lambda v, w: v + w * (rest / length), sown, end_sown)
    return (logits, sown) if mutable else logits
