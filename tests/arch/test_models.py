"""Every registered architecture, as a whole model: the protocol and the error messages."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import arch
from arch import protocol

VOCAB = 13
# S4's FFT convolution and complex arithmetic cost a few ulps more than the others.
TOL = {"s4": 2e-4, "s4d": 2e-4}


def tiny(name, **kw):
    return arch.build(name, vocab_size=VOCAB, d_model=16, n_layers=2, max_len=32, **kw)


def tokens(batch, length, seed=0):
    return jax.random.randint(jax.random.key(seed), (batch, length), 0, VOCAB)


@pytest.mark.parametrize("name", sorted(arch.ARCHS))
@pytest.mark.parametrize("length", [7])  # length 1 and others: per-mixer tests
def test_lm_parallel_equals_recurrent_and_prefill(name, length):
    model = tiny(name)
    x = tokens(2, length)
    # Jitted: eager op-by-op dispatch costs more than compiling the whole program.
    params = jax.jit(model.init)(jax.random.key(1), x)
    y = jax.jit(model.apply)(params, x)
    assert y.shape == (2, length, VOCAB)
    y_rec, _ = jax.jit(lambda p, x: protocol.recurrent_apply(model, p, x))(params, x)
    tol = TOL.get(name, 1e-5)
    np.testing.assert_allclose(y_rec, y, atol=tol, rtol=tol)
    split = (length + 1) // 2
    y_pre, _ = jax.jit(lambda p, x: protocol.prefill_then_step(model, p, x, split))(params, x)
    np.testing.assert_allclose(y_pre, y, atol=tol, rtol=tol)


def test_public_usage_from_the_readme():
    m = arch.build("mamba", vocab_size=256, d_model=64, n_layers=2)
    toks = jax.random.randint(jax.random.key(0), (2, 9), 0, 256)
    params = m.init(jax.random.key(0), toks)
    logits = m.apply(params, toks)
    state = m.apply(params, 2, method="init_state")
    for t in range(toks.shape[1]):
        state, logits_t = m.apply(params, state, toks[:, t], method="step")
    np.testing.assert_allclose(logits_t, logits[:, -1], atol=1e-4, rtol=1e-4)
    assert arch.count_params(params) > 0


@pytest.mark.parametrize("name", [n for n, s in sorted(arch.ARCHS.items()) if s.bidirectional_ok])
def test_bidirectional_classifier_sees_the_future(name):
    model = arch.build(
        name,
        vocab_size=VOCAB,
        d_model=16,
        n_layers=1,
        head="classify",
        n_classes=3,
        bidirectional=True,
        max_len=32,
        pooling="cls",
    )
    x = tokens(2, 6)
    params = jax.jit(model.init)(jax.random.key(0), x)
    out = model.apply(params, x)
    assert out.shape == (2, 3)
    # cls pooling reads position 0: a bidirectional model's output there depends on the end.
    changed = x.at[:, -1].set((x[:, -1] + 1) % VOCAB)
    assert not np.allclose(model.apply(params, changed), out)


# Mean pooling over padded inputs: tests/arch/test_padding.py, for every architecture.
@pytest.mark.parametrize("pooling", ["last"])
def test_causal_classifier_ignores_padding(pooling):
    model = arch.build(
        "mamba",
        vocab_size=VOCAB,
        d_model=16,
        n_layers=1,
        head="classify",
        n_classes=4,
        pooling=pooling,
    )
    x = tokens(2, 8)
    mask = jnp.asarray([[1] * 5 + [0] * 3, [1] * 8], jnp.float32)
    params = jax.jit(model.init)(jax.random.key(0), x, mask)
    out = model.apply(params, x, mask)
    repadded = x.at[0, 5:].set(0)
    np.testing.assert_allclose(model.apply(params, repadded, mask), out, atol=1e-6)


def test_dual_encoder_combines_two_documents():
    model = arch.build(
        "s4d",
        vocab_size=VOCAB,
        d_model=16,
        n_layers=1,
        head="retrieval",
        n_classes=2,
        bidirectional=True,
    )
    a, b = tokens(2, 6, 0), tokens(2, 6, 1)
    params = jax.jit(model.init)(jax.random.key(0), a, b)
    out = model.apply(params, a, b)
    assert out.shape == (2, 2)
    assert not np.allclose(model.apply(params, b, a), out)  # [u, v, u*v, u-v] is ordered


def test_feature_inputs():
    model = arch.build("s4d", d_input=3, d_model=16, n_layers=1, head="classify", n_classes=2)
    x = jax.random.normal(jax.random.key(0), (2, 10, 3))
    params = jax.jit(model.init)(jax.random.key(0), x)
    assert model.apply(params, x).shape == (2, 2)
    with pytest.raises(ValueError, match="d_input=3"):
        model.apply(params, x[..., :2])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="gpt5"), "unknown architecture 'gpt5'; valid: aft_conv"),
        (dict(name="mamba", d_state_typo=4), "unknown option.*d_state_typo.*takes:.*d_state"),
        (
            dict(name="rwkv", head="classify", n_classes=2, bidirectional=True),
            "rwkv has no bidirectional form",
        ),
        (dict(name="s4", bidirectional=True), "language model must be causal"),
        (dict(name="transformer", d_model=30, n_heads=4), "divisible"),
        (dict(name="s4", head="classify"), "needs n_classes"),
        (dict(name="s4", head="regress"), "unknown head 'regress'"),
    ],
)
def test_build_errors_are_one_clear_sentence(kwargs, message):
    kwargs = {"vocab_size": VOCAB, **kwargs}
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=message):
        arch.build(name, **kwargs)


def test_call_time_errors():
    model = tiny("transformer")
    params = jax.jit(model.init)(jax.random.key(0), tokens(1, 4))
    with pytest.raises(ValueError, match="integer array"):
        model.apply(params, jnp.zeros((1, 4), jnp.float32))
    with pytest.raises(ValueError, match=r"\[batch, length\]"):
        model.apply(params, jnp.zeros((4,), jnp.int32))
    with pytest.raises(ValueError, match="max_len"):
        model.apply(params, tokens(1, 40))
    learned = tiny("mamba", pos_emb="learned")
    p = learned.init(jax.random.key(0), tokens(1, 4))
    with pytest.raises(ValueError, match="max_len=32"):
        learned.apply(p, tokens(1, 33))


def test_step_on_a_bidirectional_model_is_refused():
    model = arch.build(
        "s4d",
        vocab_size=VOCAB,
        d_model=16,
        n_layers=1,
        head="classify",
        n_classes=2,
        bidirectional=True,
    )
    backbone = model.backbone
    x = tokens(1, 4)
    params = jax.jit(model.init)(jax.random.key(0), x)
    with pytest.raises(protocol.NotCausalError, match="bidirectional"):
        backbone.apply({"params": params["params"]["backbone"]}, 1, method="init_state")


@pytest.mark.parametrize("channel", ["mlp", "glu"])
def test_transformer_block_halves_start_at_one_scale(channel):
    """Attention and its channel mixer both use the GPT-2 init: N(0, 0.02) in, the output
    projection scaled by 1/sqrt(2 n_layers)."""
    n_layers = 3
    model = arch.build(
        "transformer", vocab_size=VOCAB, d_model=64, n_layers=n_layers, channel=channel
    )
    params = jax.jit(model.init)(jax.random.key(0), tokens(1, 4))["params"]["backbone"]["blocks_0"]
    out_std = 0.02 / np.sqrt(2 * n_layers)
    mixer, mlp = params["mixer"], params["channel_mixer"]
    for name, w, std in (
        ("qkv", mixer["qkv"]["kernel"], 0.02),
        ("out", mixer["out"]["kernel"], out_std),
        ("up", mlp["up"]["kernel"], 0.02),
        ("down", mlp["down"]["kernel"], out_std),
    ):
        np.testing.assert_allclose(np.std(w), std, rtol=0.1, err_msg=name)


def test_state_size_counts_what_one_sequence_carries():
    """Mamba: the conv window (d_conv - 1) x d_inner and h d_inner x d_state per layer;
    attention: keys and values of max_len positions; none for a bidirectional model."""
    mamba = arch.build("mamba", vocab_size=7, d_model=8, n_layers=3, d_state=4, d_conv=4)
    assert arch.state_size(mamba) == {"floats": 3 * (3 * 16 + 16 * 4), "per_layer": 112.0}
    tf = arch.build("transformer", vocab_size=7, d_model=8, n_layers=2, n_heads=2, max_len=16)
    assert arch.state_size(tf)["per_layer"] == 2 * 16 * 8
    s4d = arch.build("s4d", vocab_size=7, d_model=8, d_state=4)  # complex: 2 floats each
    assert arch.state_size(s4d)["per_layer"] == 8 * 2 * 2
    bidirectional = arch.build(
        "s4d", vocab_size=7, head="classify", n_classes=2, bidirectional=True
    )
    assert arch.state_size(bidirectional) is None
    assert arch.state_size(nn.Dense(3)) is None  # not one of ours: nothing to count
