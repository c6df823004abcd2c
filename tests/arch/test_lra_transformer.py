"""The pieces of the LRA paper's Transformer (arch/lra_recipes.py), each against an
independent re-derivation of what google-research/long-range-arena does."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from arch.backbone import sinusoidal_positions
from arch.mixers.attention import xavier_per_block
from kernels import attention as K

LRA = dict(
    vocab_size=13,
    head="classify",
    n_classes=5,
    bidirectional=True,
    d_model=16,
    n_layers=2,
    n_heads=2,
    qkv_dim=8,
    head_mlp=24,
    cls_token=True,
    pooling="cls",
    pos="none",
    pos_emb="sinusoidal",
    weight_init="xavier",
    use_bias=False,
    embed_std=1.0,
    channel_options={"expand": 2, "weight_init": "xavier"},
    max_len=16,
)


def test_sinusoidal_table_is_vaswani_section_3_5():
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d))."""
    length, d = 7, 10
    expected = np.zeros((length, d))
    for pos in range(length):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            expected[pos, 2 * i], expected[pos, 2 * i + 1] = math.sin(angle), math.cos(angle)
    np.testing.assert_allclose(sinusoidal_positions(length, d), expected, atol=1e-6)


def test_fused_qkv_kernel_is_xavier_per_projection():
    """Each of q, k, v gets U(+-sqrt(6 / (fan_in + its own fan_out))), as three layers."""
    fan_in, width = 64, 96
    kernel = np.asarray(xavier_per_block(3)(jax.random.key(0), (fan_in, 3 * width)))
    limit = math.sqrt(6 / (fan_in + width))
    for block in np.split(kernel, 3, axis=1):
        assert np.abs(block).max() <= limit
        np.testing.assert_allclose(block.std(), limit / math.sqrt(3), rtol=0.05)
    assert not np.allclose(*np.split(kernel, 3, axis=1)[:2])  # independent draws


def test_model_has_the_lra_parameters():
    model = arch.build("transformer", **LRA)
    tokens = jnp.ones((2, 6), jnp.int32)
    params = jax.jit(model.init)(jax.random.key(0), tokens)["params"]
    backbone = params["backbone"]
    np.testing.assert_array_equal(backbone["cls"], 0.0)  # zero-initialised CLS vector
    mixer = backbone["blocks_0"]["mixer"]
    assert set(mixer["qkv"]) == {"kernel"} and set(mixer["out"]) == {"kernel"}  # no biases
    assert mixer["qkv"]["kernel"].shape == (16, 3 * 8) and mixer["out"]["kernel"].shape == (8, 16)
    assert backbone["blocks_0"]["channel_mixer"]["up"]["kernel"].shape == (16, 32)
    assert params["hidden"]["kernel"].shape == (16, 24)  # Dense(mlp) -> ReLU -> Dense
    assert params["head"]["kernel"].shape == (24, 5)
    np.testing.assert_allclose(backbone["embedding"]["embedding"].std(), 1.0, rtol=0.25)


def test_cls_output_is_what_the_head_reads():
    """The head sees the output at the CLS position: position 0 of the backbone's L+1."""
    model = arch.build("transformer", **LRA)
    tokens = jax.random.randint(jax.random.key(1), (2, 6), 0, 13)
    variables = jax.jit(model.init)(jax.random.key(0), tokens)
    h = model.apply(variables, tokens, method=lambda m, x: m.backbone(x))
    assert h.shape == (2, 7, 16)
    head = variables["params"]
    expected = jax.nn.relu(h[:, 0] @ head["hidden"]["kernel"] + head["hidden"]["bias"])
    expected = expected @ head["head"]["kernel"] + head["head"]["bias"]
    np.testing.assert_allclose(model.apply(variables, tokens), expected, rtol=1e-5, atol=1e-6)


def test_attention_dropout_is_unbiased_and_only_in_training():
    q, k, v = (jax.random.normal(jax.random.key(i), (1, 4, 2, 8)) for i in range(3))
    exact = K.attention_reference(q, k, v, causal=False)
    drop = jax.vmap(
        lambda key: K.attention_reference(q, k, v, causal=False, dropout_rate=0.3, dropout_rng=key)
    )(jax.random.split(jax.random.key(3), 4000))
    assert not np.allclose(drop[0], exact, atol=1e-3)
    # E[dropout(w) / (1 - p)] = w: the mean over draws approaches the exact output.
    np.testing.assert_allclose(drop.mean(0), exact, atol=0.05)

    model = arch.build("transformer", **{**LRA, "attn_dropout": 0.5})
    tokens = jnp.ones((2, 6), jnp.int32)
    variables = jax.jit(model.init)(jax.random.key(0), tokens)
    plain = arch.build("transformer", **LRA)
    np.testing.assert_allclose(model.apply(variables, tokens), plain.apply(variables, tokens))
    trained = model.apply(variables, tokens, train=True, rngs={"dropout": jax.random.key(1)})
    assert not np.allclose(trained, plain.apply(variables, tokens), atol=1e-4)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(bidirectional=False), "needs bidirectional=True"),
        (dict(head="lm", bidirectional=False), "classifier options"),
        (dict(channel_options={"widen": 2}), "unknown channel option"),
        (dict(pos_emb="rotary"), "unknown pos_emb"),
        (dict(weight_init="kaiming"), "unknown weight_init"),
    ],
)
def test_bad_options_are_one_clear_error(options, message):
    with pytest.raises(ValueError, match=message):
        model = arch.build("transformer", **{**LRA, **options})
        model.init(jax.random.key(0), jnp.ones((1, 4), jnp.int32))


def test_a_cls_backbone_refuses_to_step():
    model = arch.build("transformer", **LRA)
    with pytest.raises(ValueError, match="cls_token=True reads whole sequences"):
        model.init(jax.random.key(0), 1, method=lambda m, b: m.backbone.init_state(b))
