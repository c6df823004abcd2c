"""A residual block: norm -> sequence mixer -> norm -> channel mixer.

The block follows the mixer protocol itself (its state is a ``BlockState`` of its two
sub-states), so a backbone steps through its blocks exactly as it applies them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

from flax import linen as nn

from arch.protocol import NoState

NORMS = {"layer": nn.LayerNorm, "rms": nn.RMSNorm}


class BlockState(NamedTuple):
    mixer: Any  # the sequence mixer's state (e.g. MambaState)
    channel: Any  # the channel mixer's state (NoState for a position-wise MLP or none)


def make_norm(kind: str, eps: float, name: str | None = None) -> nn.Module:
    if kind not in NORMS:
        raise ValueError(f"unknown norm {kind!r}; valid: {', '.join(NORMS)}")
    return NORMS[kind](epsilon=eps, name=name)


class Block(nn.Module):
    """Pre-norm ``x + f(norm(x))`` or post-norm ``norm(x + f(x))``, twice.

    ``mixer_factory`` and ``channel_factory`` build the two sub-modules (the channel
    mixer may be absent, as in Mamba). ``parallel_residual``: both read the same input,
    ``x + f(norm1(x)) + g(norm2(x))`` (GPT-J and GPT-NeoX, Black et al. 2022, section
    2.1; Pythia's ``use_parallel_residual``); pre-norm with a channel mixer only.
    """

    mixer_factory: Callable[[], nn.Module]
    channel_factory: Callable[[], nn.Module] | None = None
    norm: str = "layer"
    norm_eps: float = 1e-5
    prenorm: bool = True
    dropout: float = 0.0
    parallel_residual: bool = False

    def setup(self):
        if self.parallel_residual and (self.channel_factory is None or not self.prenorm):
            raise ValueError(
                "parallel_residual=True needs a pre-norm block with a channel mixer "
                "(x + mixer(norm1(x)) + channel(norm2(x)))"
            )
        self.norm1 = make_norm(self.norm, self.norm_eps)
        self.mixer = self.mixer_factory()
        if self.channel_factory is not None:
            self.norm2 = make_norm(self.norm, self.norm_eps)
            self.channel_mixer = self.channel_factory()
        self.drop = nn.Dropout(self.dropout)

    def _residual(self, x, norm, fn, train):
        """One residual branch; ``fn(h) -> (state, y)``."""
        if self.prenorm:
            state, y = fn(norm(x))
            return state, x + self.drop(y, deterministic=not train)
        state, y = fn(x)
        return state, norm(x + self.drop(y, deterministic=not train))

    def _forward(self, x, mixer_fn, channel_fn, train):
        if self.parallel_residual:
            mixer_state, y = mixer_fn(self.norm1(x))
            channel_state, z = channel_fn(self.norm2(x))
            drop = functools.partial(self.drop, deterministic=not train)
            return BlockState(mixer_state, channel_state), x + drop(y) + drop(z)
        mixer_state, x = self._residual(x, self.norm1, mixer_fn, train)
        channel_state = NoState()
        if self.channel_factory is not None:
            channel_state, x = self._residual(x, self.norm2, channel_fn, train)
        return BlockState(mixer_state, channel_state), x

    def __call__(self, x, *, train: bool = False, mask=None):
        """``mask`` ([B, L] bool, True = real token) reaches a bidirectional mixer only.

        A causal mixer needs none: right padding cannot reach an earlier position.
        """
        mixer_kwargs = {"mask": mask} if mask is not None and not self.causal_mixer else {}
        _, y = self._forward(
            x,
            lambda h: (None, self.mixer(h, train=train, **mixer_kwargs)),
            lambda h: (None, self.channel_mixer(h, train=train)),
            train,
        )
        return y

    @property
    def causal_mixer(self) -> bool:
        return getattr(self.mixer, "causal", True)

    def init_state(self, batch_size: int) -> BlockState:
        channel = (
            NoState() if self.channel_factory is None else self.channel_mixer.init_state(batch_size)
        )
        return BlockState(self.mixer.init_state(batch_size), channel)

    def step(self, state: BlockState, x_t):
        return self._forward(
            x_t,
            lambda h: self.mixer.step(state.mixer, h),
            lambda h: self.channel_mixer.step(state.channel, h),
            False,
        )

    def prefill(self, state: BlockState, x):
        return self._forward(
            x,
            lambda h: self.mixer.prefill(state.mixer, h),
            lambda h: self.channel_mixer.prefill(state.channel, h),
            False,
        )
