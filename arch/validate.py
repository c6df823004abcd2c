"""Input checks at call time, so that a wrong shape fails with a sentence, not a trace."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def check_inputs(inputs, *, vocab_size: int | None, d_input: int | None, per_token: bool) -> None:
    """Token ids ``[batch, length]`` (int) or features ``[batch, length, d_input]``.

    ``per_token`` drops the length axis (the ``step`` form).
    """
    shape = getattr(inputs, "shape", None)
    if shape is None:
        raise TypeError(f"expected an array of inputs, got {type(inputs).__name__}")
    where = "one step" if per_token else "a sequence"
    if vocab_size is not None:
        want = 1 if per_token else 2
        if len(shape) != want or not jnp.issubdtype(inputs.dtype, jnp.integer):
            layout = "[batch]" if per_token else "[batch, length]"
            raise ValueError(
                f"this model embeds token ids: {where} must be an integer array {layout}, "
                f"got dtype {inputs.dtype} with shape {tuple(shape)}"
            )
        check_token_range(inputs, vocab_size)
    else:
        want = 2 if per_token else 3
        if len(shape) != want or shape[-1] != d_input:
            layout = "[batch, d_input]" if per_token else "[batch, length, d_input]"
            raise ValueError(
                f"this model projects features: {where} must be {layout} with "
                f"d_input={d_input}, got shape {tuple(shape)}"
            )
        if not jnp.issubdtype(inputs.dtype, jnp.floating):
            raise ValueError(f"feature inputs must be floating point, got dtype {inputs.dtype}")


def check_token_range(tokens, vocab_size: int, where: str = "") -> None:
    """Token ids must lie in [0, vocab_size): an id outside gives NaN logits, silently.

    Only concrete arrays are checked (under ``jit`` the values are not known; the
    training loop checks its batches on the host instead).
    """
    if isinstance(tokens, jax.core.Tracer) or np.size(tokens) == 0:
        return
    values = np.asarray(tokens)  # host copy: jnp reductions would be staged under a trace
    low, high = int(values.min()), int(values.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise ValueError(
            f"token id {bad}{where} is outside the vocabulary [0, {vocab_size}); "
            "build the model with a larger vocab_size or fix the tokenizer"
        )
