"""The short causal depthwise convolution that Mamba and Griffin put before their scans.

One function for the parallel and the recurrent forms: the state is the last
``width - 1`` inputs, so prefill-then-step equals one pass over the whole sequence.
"""

from __future__ import annotations

import jax.numpy as jnp


def causal_conv(state, x, weight, bias=None):
    """Convolve ``x`` ([B, L, C]) after ``state`` ([B, width - 1, C]) with ``weight``
    ([width, C], tap ``width - 1`` on the current input, as PyTorch's Conv1d with
    ``padding=width - 1`` and the first L outputs); returns (new state, output)."""
    width, length = weight.shape[0], x.shape[1]
    padded = jnp.concatenate([state.astype(x.dtype), x], axis=1)
    out = sum(padded[:, i : i + length] * weight[i] for i in range(width))
    if bias is not None:
        out = out + bias
    # The state keeps its own dtype (float32 from init_state) under bfloat16 inputs, so
    # prefill's state has init_state's types (a lax.scan over chunks needs that).
    return padded[:, padded.shape[1] - (width - 1) :].astype(state.dtype), out
