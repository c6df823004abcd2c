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
tokens and 25 us at 16,384, and Mamba's 16K-token training step (batch 1) took 8.7 s in
one call and 6.6 s in chunks of 1,024. Chunks keep each layer's working set
cache-sized; the saved activations are the same (the backward pass needs all of them).

It can pay only where ``prefill`` is the same computation as the parallel call: the
recurrent mixers whose state does not grow with the context. S4 and S4D train by an FFT
convolution but prefill by a scan, and the Transformer's prefill attends to a
``max_len`` KV cache. ``run.py bench train --time_chunk N`` times each architecture both
ways and keeps the faster: at 16K chunks won for Mamba (0.83x one call) and Mamba-2
(0.70x), and within the noise for RWKV-6, S5 and MoE-Mamba; at 4K for none.

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


def check_time_chunk(chunk: int) -> None:
    """A clear error for a chunk that is not a positive int."""
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
        raise ValueError(f"time_chunk={chunk!r} must be a positive int (e.g. 1024), or 0 for off")


def apply_in_time_chunks(
    model,
    variables,
    tokens: Int[Array, "batch length"],
    chunk: int,
    *,
    mutable: Sequence[str] = (),
) -> Float[Array, "batch length vocab"] | tuple[Float[Array, "batch length vocab"], dict]:
    """The logits of ``model.apply(variables, tokens)`` from ``prefill`` over time chunks.

    Whole chunks go through one ``lax.scan``; a length that ``chunk`` does not divide
    ends with one shorter ``prefill``. A sequence no longer than ``chunk`` is one plain
    ``model.apply``. ``mutable``: collections the layers may sow into (e.g. ``("losses",
    "moe_stats")``); when given, returns ``(logits, sown)`` as ``model.apply(...,
    mutable=...)`` does, each sown value averaged over the chunks, weighted by their
    lengths.
    """
    batch, length = tokens.shape
    check_time_chunk(chunk)
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

    state = model.apply(variables, batch, method="init_state")
    chunks = jnp.swapaxes(tokens[:, : whole * chunk].reshape(batch, whole, chunk), 0, 1)
    state, (logits, sown) = jax.lax.scan(prefill, state, chunks)
    logits = jnp.swapaxes(logits, 0, 1).reshape(batch, whole * chunk, -1)
    sown = jax.tree.map(lambda v: v.mean(0) * (whole * chunk / length), sown)
    if rest:
        _, (last, last_sown) = prefill(state, tokens[:, whole * chunk :])
        logits = jnp.concatenate([logits, last], axis=1)
        sown = jax.tree.map(lambda v, w: v + w * (rest / length), sown, last_sown)
    return (logits, sown) if mutable else logits
