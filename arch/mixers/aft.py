"""Attention Free Transformer mixers (Zhai et al. 2021, "An Attention Free Transformer"):
AFT-full, AFT-local, AFT-simple and AFT-conv.

Glossary (code -> paper):

- ``d_model`` = d; ``x`` = X; ``qkv``: W^Q, W^K, W^V (Q = X W^Q, K = X W^K, V = X W^V);
  ``out``: the output projection;
- ``kernels.aft``: Y_t = sigmoid(Q_t) * sum_t' exp(K_t' + w[t, t']) V_t' /
  sum_t' exp(K_t' + w[t, t']) (eq. 2), with t' <= t when causal;
- ``pos_bias`` = w, the learned pairwise position biases (eq. 2), ``[max_len, max_len]``;
  with ``pos_bias_rank`` = r, w = U V^T from ``pos_bias_u`` = U, ``pos_bias_v`` = V,
  each ``[max_len, r]`` (``kernels.aft.LowRankBias``);
- ``window`` = s: AFT-local uses w[t, t'] where |t - t'| < s and 0 elsewhere (eq. 3);
- AFT-simple: w = 0 (eq. 4), a softmax of K over time;
- ``n_heads`` = h, ``kernel_size`` = s, ``aft_conv_kernel`` = the per-head kernels w_i
  (eq. 5), ``aft_conv_gain``, ``aft_conv_shift`` = gamma_i, beta_i of the
  re-parameterisation w_i <- gamma_i (w_i - mean w_i) / std w_i + beta_i;
- ``num``, ``den``, ``max``: the running numerator and denominator of eq. 4 (scaled by
  exp(-max) so that nothing overflows) over the positions seen so far.

Each layer is: q, k, v projections -> its operation from ``kernels.aft`` -> output
projection. Recurrent states (the kernels return plain tuples; the layers name them):

- AFTSimple: ``AFTSimpleState`` (num, den, max) per channel, O(1) in the context;
- AFTFull: ``AFTCache``, the keys and values of every past position up to ``max_len``
  (like attention's KV cache);
- AFTLocal, AFTConv: ``AFTWindow``, the keys and values of the last ``s - 1`` positions
  (where the learned bias applies) and an ``AFTSimpleState`` of all older keys, which
  the paper weighs with bias 0: a fixed-size state.

Position biases start at 0 (so every variant starts as AFT-simple); AFT-conv's gain
and shift start at 0 as in the paper. They train like the decays of the recurrent
layers (``arch.params.SSM``: ``train.ssm_lr``, ``train.ssm_weight_decay``).

Factorised bias (``pos_bias_rank``, AFT-full and AFT-local): the dense w costs max_len^2
parameters per layer (16.8M at 4096); U V^T costs 2 max_len r. A factorised w = U V^T
(U, V in R^{T x d'}) is attributed to the paper; the paper text that could be searched
from this project confirms eq. 2 with a dense w in R^{T x T}, but surfaced neither the
factorised form nor the d' its experiments use, so the default stays the dense table
(``pos_bias_rank=None``) and a rank is opt-in. Init: U = 0,
V ~ N(0, 1/r), so w = U V^T starts at exactly 0 like the dense table (both factors 0
would leave both gradients 0 forever); dL/dU = (dL/dw) V is nonzero from the first step,
and with var 1/r, E[V V^T] has a unit diagonal, so that step moves w about as much as
it would move a dense table (the LoRA-style zero/random split, Hu et al. 2021).

Padding (``mask``, [B, L] bool, True = real token; right padding): the padded keys
are left out of every sum (``kernels.aft``: keys -> a finite -inf, values -> 0), so an
example's outputs at its real positions do not depend on how much padding follows it,
nor on what the pad vectors hold. Needed by the bidirectional forms; a causal layer
applies it too (harmless: trailing padding could not reach earlier positions anyway).
The recurrent forms take no mask.

Lengths: ``__call__``/``prefill`` raise ``ValueError`` past ``max_len`` (the size of the
learned bias, dense or factorised). Stepping AFT-full or AFT-local past ``max_len``
raises when the position is concrete and gives NaN outputs under ``jit``
(``arch.protocol.within_capacity``), never finite, wrong ones; generation must stop at
``max_len`` tokens.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn

from arch import params
from arch.mixers.attention import check_heads, qkv_and_out
from arch.protocol import require_causal, step_via_prefill, within_capacity
from kernels import aft as K

# There is no official AFT code to follow (the paper gives no optimizer split): the
# position biases train like the recurrent layers' decays, this project's choice.
POSITION_BIAS = params.SSM


class AFTSimpleState(NamedTuple):
    """AFT-simple's state, and the older-than-the-window part of ``AFTWindow``."""

    num: jax.Array  # [B, D] float32: sum_t' exp(K_t' - max) V_t'
    den: jax.Array  # [B, D] float32: sum_t' exp(K_t' - max)
    max: jax.Array  # [B, D] float32: max_t' K_t' (kernels.aft.RUN_FLOOR before any key)


class AFTCache(NamedTuple):
    """AFT-full's state: every past key and value, like a KV cache."""

    k: jax.Array  # [B, max_len, D] float32: keys, zero past pos
    v: jax.Array  # [B, max_len, D] float32: values
    pos: jax.Array  # [] int32: tokens already in the cache (where the next one goes)


class AFTWindow(NamedTuple):
    """AFT-local's and AFT-conv's state: the window of keys the learned bias reaches."""

    k: jax.Array  # [B, s - 1, D] float32: keys of the last s - 1 positions
    v: jax.Array  # [B, s - 1, D] float32: their values
    running: AFTSimpleState  # the sums over all older keys (bias 0)
    pos: jax.Array  # [] int32: tokens consumed


def _check_impl(impl: str, impls) -> None:
    if impl != "auto" and impl not in impls:
        raise ValueError(f"unknown AFT impl {impl!r}; valid: auto, {', '.join(impls)}")


def _check_max_len(max_len: int) -> None:
    if max_len < 1:
        raise ValueError(f"max_len={max_len} must be >= 1")


def _check_length(layer: nn.Module, length: int, what: str) -> None:
    if length > layer.max_len:
        raise ValueError(
            f"{type(layer).__name__}.{what}: length {length} exceeds max_len={layer.max_len} "
            "(the size of the learned position bias); build the layer with a larger max_len"
        )


def _check_rank(rank: int | None) -> None:
    if rank is not None and rank < 1:
        raise ValueError(f"pos_bias_rank={rank} must be >= 1 (or None: a dense bias)")


def _position_bias_rules(rank: int | None) -> dict:
    names = ("pos_bias",) if rank is None else ("pos_bias_u", "pos_bias_v")
    return dict.fromkeys(names, POSITION_BIAS)


def _position_bias(layer: nn.Module, rank: int | None):
    """w: the dense [max_len, max_len] table (0), or ``LowRankBias`` U (0), V ~ N(0, 1/r).

    U = 0 keeps w = 0 at init; V random gives U a gradient (module docstring).
    """
    size = layer.max_len
    if rank is None:
        return layer.param("pos_bias", nn.initializers.zeros, (size, size))
    u = layer.param("pos_bias_u", nn.initializers.zeros, (size, rank))
    v = layer.param("pos_bias_v", nn.initializers.normal(rank**-0.5), (size, rank))
    return K.LowRankBias(u, v)


def _split_qkv(qkv):
    """[B, L, 3 D] -> Q, K, V, each [B, L, D]."""
    return jnp.split(qkv, 3, axis=-1)


def _window_state(kernel_state, pos) -> AFTWindow:
    """``kernels.aft``'s (keys, values, (num, den, max)) as an ``AFTWindow``."""
    k, v, running = kernel_state
    return AFTWindow(k, v, AFTSimpleState(*running), pos)


def _kernel_window(state: AFTWindow):
    return state.k, state.v, tuple(state.running)


class AFTFull(nn.Module):
    """AFT-full (eq. 2): a learned bias for every pair of positions, O(T^2 d).

    Options: ``max_len`` = T, the size of the bias and of the cache; ``pos_bias_rank``:
    None (a dense [T, T] w) or r (w = U V^T, U and V [T, r]; module docstring); ``impl``.
    """

    d_model: int
    layer_id: int = 0
    n_layers: int = 1
    causal: bool = True
    max_len: int = 2048
    pos_bias_rank: int | None = None
    impl: str = "auto"

    def __post_init__(self):
        super().__post_init__()
        _check_impl(self.impl, K.IMPLS)
        _check_max_len(self.max_len)
        _check_rank(self.pos_bias_rank)

    def param_rules(self) -> dict:
        # w (or U, V): SSM rate, no official AFT code to cite (see POSITION_BIAS).
        return _position_bias_rules(self.pos_bias_rank)

    def setup(self):
        self.qkv, self.out = qkv_and_out(self.d_model, self.n_layers)
        # w (eq. 2), zero at init: the layer starts as AFT-simple.
        self.w = _position_bias(self, self.pos_bias_rank)

    def __call__(self, x, *, train: bool = False, mask=None):
        """Y_t = sigmoid(Q_t) * sum_t' exp(K_t' + w[t, t']) V_t' / sum_t' exp(K_t' + w[t, t']).

        ``mask`` ([B, L] bool, True = real token) or None: padded t' are left out.
        """
        _check_length(self, x.shape[1], "__call__")
        q, k, v = _split_qkv(self.qkv(x))
        y = K.aft_full(q, k, v, self.w, causal=self.causal, mask=mask, impl=self.impl)
        return self.out(y)

    def init_state(self, batch_size: int) -> AFTCache:
        require_causal(self, "init_state")
        cache = jnp.zeros((batch_size, self.max_len, self.d_model), jnp.float32)
        return AFTCache(k=cache, v=cache, pos=jnp.zeros((), jnp.int32))

    def prefill(self, state: AFTCache, x):
        """Write the chunk at ``pos``; position pos + i sees the cache up to pos + i."""
        require_causal(self, "prefill")
        _check_length(self, x.shape[1], "prefill")
        q, k, v = _split_qkv(self.qkv(x))
        (cache_k, cache_v), y = K.aft_full_chunk(
            (state.k, state.v), state.pos, q, k, v, self.w, impl=self.impl
        )
        y = within_capacity(y, state.pos, x.shape[1], self.max_len, "AFTFull.prefill/step")
        return AFTCache(cache_k, cache_v, state.pos + x.shape[1]), self.out(y)

    def step(self, state: AFTCache, x_t):
        require_causal(self, "step")
        return step_via_prefill(self, state, x_t)


class AFTLocal(nn.Module):
    """AFT-local (eq. 3): the learned bias w[t, t'] only where |t - t'| < window.

    Options: ``window`` = s; ``max_len``: the size of the bias; ``pos_bias_rank``: None
    (dense w) or r (w = U V^T, as for AFT-full); ``impl``.
    """

    d_model: int
    layer_id: int = 0
    n_layers: int = 1
    causal: bool = True
    window: int = 32
    max_len: int = 2048
    pos_bias_rank: int | None = None
    impl: str = "auto"

    def __post_init__(self):
        super().__post_init__()
        _check_impl(self.impl, K.IMPLS)
        _check_max_len(self.max_len)
        _check_rank(self.pos_bias_rank)
        if self.window < 1:
            raise ValueError(f"window={self.window} must be >= 1")

    def param_rules(self) -> dict:
        # w (or U, V): SSM rate, no official AFT code to cite (see POSITION_BIAS).
        return _position_bias_rules(self.pos_bias_rank)

    def setup(self):
        self.qkv, self.out = qkv_and_out(self.d_model, self.n_layers)
        # w, read only where |t - t'| < s (eq. 3); zero at init: the layer starts as AFT-simple.
        self.w = _position_bias(self, self.pos_bias_rank)

    def __call__(self, x, *, train: bool = False, mask=None):
        """Eq. 2 with w[t, t'] kept where |t - t'| < s and 0 elsewhere (eq. 3).

        ``mask`` ([B, L] bool, True = real token) or None: padded t' are left out.
        """
        _check_length(self, x.shape[1], "__call__")
        q, k, v = _split_qkv(self.qkv(x))
        y = K.aft_local(q, k, v, self.w, self.window, causal=self.causal, mask=mask, impl=self.impl)
        return self.out(y)

    def init_state(self, batch_size: int) -> AFTWindow:
        require_causal(self, "init_state")
        empty = K.aft_window_init_state(batch_size, self.window, self.d_model)
        return _window_state(empty, jnp.zeros((), jnp.int32))

    def prefill(self, state: AFTWindow, x):
        """The window plus the chunk with the learned bias, the older keys with bias 0."""
        require_causal(self, "prefill")
        _check_length(self, x.shape[1], "prefill")
        q, k, v = _split_qkv(self.qkv(x))
        window, y = K.aft_local_chunk(
            _kernel_window(state), state.pos, q, k, v, self.w, self.window
        )
        y = within_capacity(y, state.pos, x.shape[1], self.max_len, "AFTLocal.prefill/step")
        return _window_state(window, state.pos + x.shape[1]), self.out(y)

    def step(self, state: AFTWindow, x_t):
        require_causal(self, "step")
        return step_via_prefill(self, state, x_t)


class AFTSimple(nn.Module):
    """AFT-simple (eq. 4): no position bias; the causal form is a running sum (O(1) state).

    Options: ``impl``: the causal form's scan, ``"sequential"`` or ``"associative"``.
    """

    d_model: int
    layer_id: int = 0
    n_layers: int = 1
    causal: bool = True
    impl: str = "auto"

    def __post_init__(self):
        super().__post_init__()
        _check_impl(self.impl, K.SIMPLE_IMPLS)

    # No PARAM_RULES: the projections are Dense layers (Flax's usual rules).
    def setup(self):
        self.qkv, self.out = qkv_and_out(self.d_model, self.n_layers)

    def sequence_flops(self, length: int) -> float:
        """Per token and channel: the sums of exp(K) V and exp(K), a multiply-add and an
        add (running sums when causal, one global sum when not; arch/flops.py)."""
        return 4.0 * self.d_model

    def __call__(self, x, *, train: bool = False, mask=None):
        """Y_t = sigmoid(Q_t) * sum_t' softmax(K)_t' V_t' (eq. 4), t' <= t when causal.

        ``mask`` ([B, L] bool, True = real token) or None: the softmax runs over real t'.
        """
        q, k, v = _split_qkv(self.qkv(x))
        return self.out(K.aft_simple(q, k, v, causal=self.causal, mask=mask, impl=self.impl))

    def init_state(self, batch_size: int) -> AFTSimpleState:
        require_causal(self, "init_state")
        return AFTSimpleState(*K.aft_simple_init_state(batch_size, self.d_model))

    def prefill(self, state: AFTSimpleState, x):
        """Fold the chunk into the running (num, den, max); Y_t reads the sums up to t."""
        require_causal(self, "prefill")
        q, k, v = _split_qkv(self.qkv(x))
        running, y = K.aft_simple_chunk(tuple(state), q, k, v, impl=self.impl)
        return AFTSimpleState(*running), self.out(y)

    def step(self, state: AFTSimpleState, x_t):
        require_causal(self, "step")
        return step_via_prefill(self, state, x_t)


class AFTConv(nn.Module):
    """AFT-conv (eq. 5): per-head relative bias of ``kernel_size`` taps, re-parameterised.

    The effective kernel is gain * (w - mean w) / std w + shift per head; gain and shift
    start at 0 (paper), so the layer starts as AFT-simple. Translation invariant: no
    max_len. Options: ``n_heads`` = h (dividing d_model), ``kernel_size`` = s, ``impl``.
    """

    d_model: int
    layer_id: int = 0
    n_layers: int = 1
    causal: bool = True
    n_heads: int = 4
    kernel_size: int = 32
    impl: str = "auto"

    def __post_init__(self):
        super().__post_init__()
        _check_impl(self.impl, K.IMPLS)
        check_heads(self.d_model, self.n_heads)
        if self.kernel_size < 1:
            raise ValueError(f"kernel_size={self.kernel_size} must be >= 1")

    # w_i, gamma_i, beta_i: SSM rate, no official AFT code to cite (see POSITION_BIAS).
    PARAM_RULES: ClassVar = dict.fromkeys(
        ("aft_conv_kernel", "aft_conv_gain", "aft_conv_shift"), POSITION_BIAS
    )

    def setup(self):
        self.qkv, self.out = qkv_and_out(self.d_model, self.n_layers)
        heads, size = self.n_heads, self.kernel_size
        # Any non-constant init works: the re-parameterisation normalises the taps per head.
        self.aft_conv_kernel = self.param(
            "aft_conv_kernel", nn.initializers.normal(1.0), (heads, size)
        )
        self.aft_conv_gain = self.param("aft_conv_gain", nn.initializers.zeros, (heads,))
        self.aft_conv_shift = self.param("aft_conv_shift", nn.initializers.zeros, (heads,))

    def __call__(self, x, *, train: bool = False, mask=None):
        """Eq. 2 with w[t, t'] = w_i[t - t'] inside the kernel window, 0 outside (eq. 5).

        ``mask`` ([B, L] bool, True = real token) or None: padded t' are left out.
        """
        q, k, v = _split_qkv(self.qkv(x))
        w, gamma, beta = self.aft_conv_kernel, self.aft_conv_gain, self.aft_conv_shift
        y = K.aft_conv(
            q,
            k,
            v,
            w,
            self.n_heads,
            causal=self.causal,
            gain=gamma,
            shift=beta,
            mask=mask,
            impl=self.impl,
        )
        return self.out(y)

    def init_state(self, batch_size: int) -> AFTWindow:
        require_causal(self, "init_state")
        empty = K.aft_window_init_state(batch_size, self.kernel_size, self.d_model)
        return _window_state(empty, jnp.zeros((), jnp.int32))

    def prefill(self, state: AFTWindow, x):
        """As AFT-local's, with the per-head kernel as the bias inside the window."""
        require_causal(self, "prefill")
        q, k, v = _split_qkv(self.qkv(x))
        w, gamma, beta = self.aft_conv_kernel, self.aft_conv_gain, self.aft_conv_shift
        window, y = K.aft_conv_chunk(
            _kernel_window(state), state.pos, q, k, v, w, self.n_heads, gain=gamma, shift=beta
        )
        return _window_state(window, state.pos + x.shape[1]), self.out(y)

    def step(self, state: AFTWindow, x_t):
        require_causal(self, "step")
        return step_via_prefill(self, state, x_t)
