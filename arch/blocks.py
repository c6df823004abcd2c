"""A residual block: norm -> sequence mixer -> norm -> channel mixer.

The block follows the mixer protocol itself (its state is the pair of its two
sub-states), so a backbone steps through its blocks exactly as it applies them.
"""

from __future__ import annotations

from collections.abc import Callable

from flax import linen as nn

NORMS = {"layer": nn.LayerNorm, "rms": nn.RMSNorm}


def make_norm(kind: str, eps: float, name: str | None = None) -> nn.Module:
    if kind not in NORMS:
        raise ValueError(f"unknown norm {kind!r}; valid: {', '.join(NORMS)}")
    return NORMS[kind](epsilon=eps, name=name)


class Block(nn.Module):
    """Pre-norm ``x + f(norm(x))`` or post-norm ``norm(x + f(x))``, twice.

    ``mixer_factory`` and ``channel_factory`` build the two sub-modules (the channel
    mixer may be absent, as in Mamba).
    """

    mixer_factory: Callable[[], nn.Module]
    channel_factory: Callable[[], nn.Module] | None = None
    norm: str = "layer"
    norm_eps: float = 1e-5
    prenorm: bool = True
    dropout: float = 0.0

    def setup(self):
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
        mixer_state, x = self._residual(x, self.norm1, mixer_fn, train)
        channel_state = ()
        if self.channel_factory is not None:
            channel_state, x = self._residual(x, self.norm2, channel_fn, train)
        return (mixer_state, channel_state), x

    def __call__(self, x, *, train: bool = False):
        _, y = self._forward(
            x,
            lambda h: ((), self.mixer(h, train=train)),
            lambda h: ((), self.channel_mixer(h, train=train)),
            train,
        )
        return y

    def init_state(self, batch_size: int):
        channel = () if self.channel_factory is None else self.channel_mixer.init_state(batch_size)
        return (self.mixer.init_state(batch_size), channel)

    def step(self, state, x_t):
        mixer_state, channel_state = state
        return self._forward(
            x_t,
            lambda h: self.mixer.step(mixer_state, h),
            lambda h: self.channel_mixer.step(channel_state, h),
            False,
        )

    def prefill(self, state, x):
        mixer_state, channel_state = state
        return self._forward(
            x,
            lambda h: self.mixer.prefill(mixer_state, h),
            lambda h: self.channel_mixer.prefill(channel_state, h),
            False,
        )
