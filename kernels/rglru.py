"""The RG-LRU recurrence: the Real-Gated Linear Recurrent Unit of Griffin and Hawk
(De et al. 2024, "Griffin: Mixing Gated Linear Recurrences with Local Attention for
Efficient Language Models", section 2.4, eqs. 1-4)::

    r_t = sigma(W_a x_t + b_a)                      recurrence gate   (eq. 1)
    i_t = sigma(W_x x_t + b_x)                      input gate        (eq. 2)
    a_t = a^(c r_t),  c = 8                                           (eq. 3)
    h_t = a_t * h_{t-1} + sqrt(1 - a_t^2) * (i_t * x_t)               (eq. 4)

The gates are computed by the layer (``arch.mixers.rglru``); this function takes them
after the sigmoid and runs eqs. 3-4. ``a`` is stored as ``a_param`` with
softplus(a_param) = -log a (google-deepmind/recurrentgemma and transformers'
``RecurrentGemmaRglru``), so log a_t = -c r_t softplus(a_param) is computed in log
space. At a ``reset`` position (the first token of a document) the state restarts from
zero and the input is not rescaled, as in both official implementations.

The recurrence itself is the diagonal linear one of ``kernels.linear_scan``, so every
implementation there ("sequential" = ``lax.scan``, the reference; "associative";
"chunked"; "pallas") runs it: ``impl`` and its options pass through.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from kernels.linear_scan import linear_scan

C = 8.0  # Griffin section 2.4: "c is a scalar-valued constant set to 8"
# The derivative of sqrt is clipped at this value near 0 (both official codes: it keeps
# bfloat16 training finite when a_t -> 1).
MAX_SQRT_GRADIENT = 1000.0


@jax.custom_jvp
def sqrt_bounded_derivative(x: jax.Array) -> jax.Array:
    """sqrt(x), with d sqrt(x)/dx = 1 / sqrt(max(4x, 1 / MAX_SQRT_GRADIENT^2))."""
    return jnp.sqrt(x)


@sqrt_bounded_derivative.defjvp
def _sqrt_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return jnp.sqrt(x), dx / jnp.sqrt(jnp.maximum(4.0 * x, 1.0 / MAX_SQRT_GRADIENT**2))


def rg_lru(
    x: Float[Array, "batch length width"],
    input_gate: Float[Array, "batch length width"],
    recurrence_gate: Float[Array, "batch length width"],
    a_param: Float[Array, " width"],
    h0: Float[Array, "batch width"] | None = None,
    *,
    reset: Bool[Array, "batch length"] | None = None,
    impl: str = "auto",
    **options,
) -> tuple[Float[Array, "batch length width"], Float[Array, "batch width"]]:
    """Every state h_t (the layer's output) and the last one, in float32.

    ``input_gate``, ``recurrence_gate``: i_t and r_t in (0, 1). ``reset``: True where the
    state restarts. ``impl``/``options``: those of ``kernels.linear_scan.linear_scan``.
    """
    if not (x.shape == input_gate.shape == recurrence_gate.shape) or x.ndim != 3:
        raise ValueError(
            "rg_lru: x, input_gate and recurrence_gate must share one [batch, length, width] "
            f"shape; got {x.shape}, {input_gate.shape}, {recurrence_gate.shape}"
        )
    if a_param.shape != x.shape[-1:]:
        raise ValueError(f"rg_lru: a_param must be [width]={x.shape[-1:]}, got {a_param.shape}")
    f32 = jnp.float32
    log_a = -C * recurrence_gate.astype(f32) * jax.nn.softplus(a_param.astype(f32))  # eq. 3
    a_t = jnp.exp(log_a)
    scale = sqrt_bounded_derivative(1.0 - jnp.exp(2.0 * log_a))  # sqrt(1 - a_t^2), eq. 4
    if reset is not None:
        restart = reset[..., None]
        a_t = jnp.where(restart, 0.0, a_t)
        scale = jnp.where(restart, 1.0, scale)
    b = x.astype(f32) * input_gate.astype(f32) * scale
    h0 = None if h0 is None else h0.astype(f32)
    return linear_scan(a_t, b, h0, impl=impl, **options)
