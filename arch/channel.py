"""Position-wise channel mixers (the feed-forward half of a block).

Glossary: ``d_model`` = d_model, ``expand`` = d_ff / d_model (4 in Vaswani et al.
2017, section 3.3), ``up``/``down`` = W_1/W_2 of FFN(x) = W_2 act(W_1 x + b_1) + b_2.

They follow the mixer protocol with an empty state (``NoState``) so that a block
treats every channel mixer alike; RWKV's ChannelMix (token shift, so a real state)
lives in ``arch.mixers.rwkv``.
"""

from __future__ import annotations

from flax import linen as nn

from arch.protocol import NoState


def gpt2_inits(n_layers: int):
    """(input, output) kernel inits: N(0, 0.02), the output scaled by 1/sqrt(2 n_layers).

    The same GPT-2 convention as attention's projections (``arch.mixers.attention.
    qkv_and_out``), so both halves of a Transformer block start at one scale.
    """
    normal = nn.initializers.normal
    return normal(0.02), normal(0.02 / (2 * n_layers) ** 0.5)


class PositionWise(nn.Module):
    """The recurrent methods of a layer that looks at one position at a time."""

    def init_state(self, batch_size: int) -> NoState:
        return NoState()

    def step(self, state: NoState, x_t):
        return state, self(x_t)

    def prefill(self, state: NoState, x):
        return state, self(x)


MLP_ACTIVATIONS = {
    "gelu_tanh": lambda x: nn.gelu(x, approximate=True),
    "gelu_exact": lambda x: nn.gelu(x, approximate=False),
}


class MLP(PositionWise):
    """Dense -> GELU -> Dense (the Transformer feed-forward, Vaswani et al. 2017 eq. 2).

    ``weight_init``: "gpt2" (``gpt2_inits``) or "xavier" (Xavier-uniform kernels, the LRA
    Transformer's ``MlpBlock``); ``dropout``: on the hidden activations (LRA's
    ``MlpBlock`` drops after the GELU; the block drops the output); ``activation``:
    "gelu_tanh" (the tanh approximation, Flax's default) or "gelu_exact" (the erf form,
    GPT-NeoX/Pythia's ``hidden_act="gelu"``).
    """

    d_model: int
    layer_id: int = 0
    n_layers: int = 1
    expand: int = 4
    weight_init: str = "gpt2"
    dropout: float = 0.0
    activation: str = "gelu_tanh"

    def setup(self):
        if self.activation not in MLP_ACTIVATIONS:
            raise ValueError(
                f"unknown MLP activation {self.activation!r}; valid: {', '.join(MLP_ACTIVATIONS)}"
            )
        if self.weight_init not in ("gpt2", "xavier"):
            raise ValueError(f"unknown MLP weight_init {self.weight_init!r}; valid: gpt2, xavier")
        if self.weight_init == "xavier":
            w_in = w_out = nn.initializers.xavier_uniform()
        else:
            w_in, w_out = gpt2_inits(self.n_layers)
        self.up = nn.Dense(self.expand * self.d_model, kernel_init=w_in)
        self.down = nn.Dense(self.d_model, kernel_init=w_out)
        self.drop = nn.Dropout(self.dropout)

    def __call__(self, x, *, train: bool = False):
        hidden = MLP_ACTIVATIONS[self.activation](self.up(x))
        return self.down(self.drop(hidden, deterministic=not train))


GLU_ACTIVATIONS = {"silu": nn.silu, "gelu": lambda x: nn.gelu(x, approximate=True)}


class GLU(PositionWise):
    """Gated feed-forward (Shazeer 2020): down(act(gate(x)) * up(x)).

    ``activation``: "silu" (SwiGLU, eq. 6) or "gelu" (GeGLU, tanh GELU, as Griffin's
    MLP block). Hidden width: ``hidden_ratio * d_model`` when given (Griffin: 3), else
    2/3 of ``expand * d_model`` (the parameter count of an MLP of that expansion).
    """

    d_model: int
    layer_id: int = 0
    n_layers: int = 1
    expand: int = 4
    activation: str = "silu"
    hidden_ratio: float | None = None

    def setup(self):
        if self.activation not in GLU_ACTIVATIONS:
            raise ValueError(
                f"unknown GLU activation {self.activation!r}; valid: {', '.join(GLU_ACTIVATIONS)}"
            )
        if self.hidden_ratio:
            hidden = int(self.hidden_ratio * self.d_model)
        else:
            hidden = int(2 * self.expand * self.d_model / 3)  # same parameter count as MLP
        w_in, w_out = gpt2_inits(self.n_layers)
        self.gate = nn.Dense(hidden, use_bias=False, kernel_init=w_in)
        self.up = nn.Dense(hidden, use_bias=False, kernel_init=w_in)
        self.down = nn.Dense(self.d_model, use_bias=False, kernel_init=w_out)

    def __call__(self, x, *, train: bool = False):
        return self.down(GLU_ACTIVATIONS[self.activation](self.gate(x)) * self.up(x))
