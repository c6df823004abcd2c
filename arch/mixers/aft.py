"""Attention Free Transformer mixers (Zhai et al. 2021): AFT-full, -local, -simple, -conv.

Each is: q, k, v projections -> the AFT operation of ``kernels.aft`` -> output
projection. Recurrent state:

- AFTSimple: a running (num, den, max) per channel: O(1) in the context length;
- AFTFull: a KV cache of every past position up to ``max_len`` (like attention);
- AFTLocal, AFTConv: the keys and values of the last ``window - 1`` positions (where
  the learned bias applies) plus a running (num, den, max) of all older keys, which the
  paper weighs with bias 0: a fixed-size state.

Position biases start at 0 (so every variant starts as AFT-simple); AFT-conv's gain
and shift (its kernel re-parameterisation) start at 0 as in the paper. The biases are
in ``SSM_PARAMS``: like decay parameters they get the SSM learning rate and no weight
decay.

Lengths: ``__call__``/``prefill`` raise ``ValueError`` past ``max_len`` (the size of the
learned [max_len, max_len] bias). A traced position inside ``step`` cannot be checked;
stepping past ``max_len`` clamps the bias lookup (and AFT-full's cache write), so
generation must stop at ``max_len`` tokens.
"""

from __future__ import annotations

from typing import ClassVar

import jax.numpy as jnp
from flax import linen as nn

from arch.protocol import require_causal
from kernels import aft as K


def _running(batch: int, dim: int) -> dict:
    num, den, mx = K.aft_simple_init_state(batch, dim)
    return {"num": num, "den": den, "max": mx}


def _as_run(state: dict):
    return (state["num"], state["den"], state["max"])


def _from_run(run) -> dict:
    return {"num": run[0], "den": run[1], "max": run[2]}


class _AFT(nn.Module):
    """Shared fields, projections and checks; subclasses supply the operation."""

    d_model: int
    layer_id: int = 0
    n_layers: int = 1
    causal: bool = True

    SSM_PARAMS: ClassVar[tuple[str, ...]] = ()
    _IMPLS: ClassVar[dict] = K.IMPLS

    def __post_init__(self):
        super().__post_init__()
        impl = getattr(self, "impl", "auto")
        if impl != "auto" and impl not in self._IMPLS:
            raise ValueError(f"unknown AFT impl {impl!r}; valid: auto, {', '.join(self._IMPLS)}")
        if getattr(self, "max_len", 1) < 1:
            raise ValueError(f"max_len={self.max_len} must be >= 1")

    def _projections(self):
        self.qkv = nn.Dense(3 * self.d_model, kernel_init=nn.initializers.normal(0.02))
        self.out = nn.Dense(
            self.d_model, kernel_init=nn.initializers.normal(0.02 / (2 * self.n_layers) ** 0.5)
        )

    def _qkv(self, x):
        return jnp.split(self.qkv(x), 3, axis=-1)

    def _check_length(self, length: int, what: str):
        max_len = getattr(self, "max_len", None)
        if max_len is not None and length > max_len:
            raise ValueError(
                f"{type(self).__name__}.{what}: length {length} exceeds max_len={max_len} "
                "(the size of the learned position bias); build the layer with a larger max_len"
            )

    def __call__(self, x, *, train: bool = False):
        self._check_length(x.shape[1], "__call__")
        return self.out(self._mix(*self._qkv(x)))

    def prefill(self, state, x):
        require_causal(self, "prefill")
        self._check_length(x.shape[1], "prefill")
        state, y = self._chunk(state, *self._qkv(x))
        return state, self.out(y)

    def step(self, state, x_t):
        require_causal(self, "step")
        state, y = self._chunk(state, *self._qkv(x_t[:, None]))
        return state, self.out(y[:, 0])


class AFTFull(_AFT):
    """AFT-full (eq. 2): a learned bias for every pair of positions, O(T^2 d)."""

    max_len: int = 2048
    impl: str = "auto"

    SSM_PARAMS: ClassVar[tuple[str, ...]] = ("pos_bias",)

    def setup(self):
        self._projections()
        self.pos_bias = self.param("pos_bias", nn.initializers.zeros, (self.max_len, self.max_len))

    def _mix(self, q, k, v):
        return K.aft_full(q, k, v, self.pos_bias, causal=self.causal, impl=self.impl)

    def init_state(self, batch_size: int):
        require_causal(self, "init_state")
        cache = jnp.zeros((batch_size, self.max_len, self.d_model), jnp.float32)
        return {"k": cache, "v": cache, "pos": jnp.zeros((), jnp.int32)}

    def _chunk(self, state, q, k, v):
        pos = state["pos"]
        (ck, cv), y = K.aft_full_chunk(
            (state["k"], state["v"]), pos, q, k, v, self.pos_bias, impl=self.impl
        )
        return {"k": ck, "v": cv, "pos": pos + q.shape[1]}, y


class _Windowed(_AFT):
    """State: the last ``window - 1`` keys/values plus the running sum of older keys."""

    def _window(self) -> int:
        raise NotImplementedError

    def init_state(self, batch_size: int):
        require_causal(self, "init_state")
        buf_k, buf_v, run = K.aft_window_init_state(batch_size, self._window(), self.d_model)
        return {"k": buf_k, "v": buf_v, **_from_run(run), "pos": jnp.zeros((), jnp.int32)}

    def _chunk(self, state, q, k, v):
        pos = state["pos"]
        kernel_state = (state["k"], state["v"], _as_run(state))
        (buf_k, buf_v, run), y = self._window_chunk(kernel_state, pos, q, k, v)
        return {"k": buf_k, "v": buf_v, **_from_run(run), "pos": pos + q.shape[1]}, y


class AFTLocal(_Windowed):
    """AFT-local (eq. 3): the learned bias w[t, t'] only where |t - t'| < window."""

    window: int = 32
    max_len: int = 2048
    impl: str = "auto"

    SSM_PARAMS: ClassVar[tuple[str, ...]] = ("pos_bias",)

    def __post_init__(self):
        super().__post_init__()
        if self.window < 1:
            raise ValueError(f"window={self.window} must be >= 1")

    def setup(self):
        self._projections()
        self.pos_bias = self.param("pos_bias", nn.initializers.zeros, (self.max_len, self.max_len))

    def _window(self) -> int:
        return self.window

    def _mix(self, q, k, v):
        return K.aft_local(q, k, v, self.pos_bias, self.window, causal=self.causal, impl=self.impl)

    def _window_chunk(self, state, pos, q, k, v):
        return K.aft_local_chunk(state, pos, q, k, v, self.pos_bias, self.window)


class AFTSimple(_AFT):
    """AFT-simple (eq. 4): no position bias; causal form is a running sum (O(1) state)."""

    impl: str = "auto"

    _IMPLS: ClassVar[dict] = K.SIMPLE_IMPLS

    def setup(self):
        self._projections()

    def _mix(self, q, k, v):
        return K.aft_simple(q, k, v, causal=self.causal, impl=self.impl)

    def init_state(self, batch_size: int):
        require_causal(self, "init_state")
        return _running(batch_size, self.d_model)

    def _chunk(self, state, q, k, v):
        run, y = K.aft_simple_chunk(_as_run(state), q, k, v, impl=self.impl)
        return _from_run(run), y


class AFTConv(_Windowed):
    """AFT-conv (eq. 5): per-head relative bias of ``kernel_size`` taps, re-parameterised.

    The effective kernel is gain * (w - mean w) / std w + shift per head; gain and shift
    start at 0 (paper), so the layer starts as AFT-simple. Translation invariant: no
    max_len.
    """

    n_heads: int = 4
    kernel_size: int = 32
    impl: str = "auto"

    SSM_PARAMS: ClassVar[tuple[str, ...]] = ("aft_conv_kernel", "aft_conv_gain", "aft_conv_shift")

    def __post_init__(self):
        super().__post_init__()
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                "pick n_heads that divides d_model"
            )
        if self.kernel_size < 1:
            raise ValueError(f"kernel_size={self.kernel_size} must be >= 1")

    def setup(self):
        self._projections()
        shape = (self.n_heads, self.kernel_size)
        # Any non-constant init works: the re-parameterisation normalises the taps per head.
        self.aft_conv_kernel = self.param("aft_conv_kernel", nn.initializers.normal(1.0), shape)
        self.aft_conv_gain = self.param("aft_conv_gain", nn.initializers.zeros, (self.n_heads,))
        self.aft_conv_shift = self.param("aft_conv_shift", nn.initializers.zeros, (self.n_heads,))

    def _window(self) -> int:
        return self.kernel_size

    def _mix(self, q, k, v):
        return K.aft_conv(
            q,
            k,
            v,
            self.aft_conv_kernel,
            self.n_heads,
            causal=self.causal,
            gain=self.aft_conv_gain,
            shift=self.aft_conv_shift,
            impl=self.impl,
        )

    def _window_chunk(self, state, pos, q, k, v):
        return K.aft_conv_chunk(
            state,
            pos,
            q,
            k,
            v,
            self.aft_conv_kernel,
            self.n_heads,
            gain=self.aft_conv_gain,
            shift=self.aft_conv_shift,
        )
