"""Position-wise channel mixers (the feed-forward half of a block).

They follow the mixer protocol with an empty state so that a block can treat every
channel mixer alike; RWKV's ChannelMix (token shift, so a real state) lives in
``arch.mixers.rwkv``.
"""

from __future__ import annotations

from flax import linen as nn


class MLP(nn.Module):
    """Dense -> GELU -> Dense (the Transformer feed-forward)."""

    d_model: int
    layer_id: int = 0
    n_layers: int = 1
    expand: int = 4

    def setup(self):
        self.up = nn.Dense(self.expand * self.d_model)
        self.down = nn.Dense(self.d_model)

    def __call__(self, x, *, train: bool = False):
        return self.down(nn.gelu(self.up(x)))

    def init_state(self, batch_size: int):
        return ()

    def step(self, state, x_t):
        return state, self(x_t)

    def prefill(self, state, x):
        return state, self(x)


class GLU(nn.Module):
    """SwiGLU feed-forward (Shazeer 2020): down(silu(gate(x)) * up(x))."""

    d_model: int
    layer_id: int = 0
    n_layers: int = 1
    expand: int = 4

    def setup(self):
        hidden = int(2 * self.expand * self.d_model / 3)  # same parameter count as MLP
        self.gate = nn.Dense(hidden, use_bias=False)
        self.up = nn.Dense(hidden, use_bias=False)
        self.down = nn.Dense(self.d_model, use_bias=False)

    def __call__(self, x, *, train: bool = False):
        return self.down(nn.silu(self.gate(x)) * self.up(x))

    def init_state(self, batch_size: int):
        return ()

    def step(self, state, x_t):
        return state, self(x_t)

    def prefill(self, state, x):
        return state, self(x)
