"""An example's prediction does not depend on the padding that follows it.

LRA pads every sequence to the task length; the LRA code masks its pad tokens
(google-research/long-range-arena ``models/transformer/transformer.py``: the padding
mask goes to every attention layer) and state-spaces/s4 zeroes the positions past each
length before its convolutions. Here: for every registered architecture, causal and
(where it exists) bidirectional, the same 5 real tokens padded to 8 and to 13
positions, with random pad tokens, give the same logits.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch

VOCAB, REAL = 11, 5


# The LRA paper's Transformer (arch/lra_recipes.py): a CLS vector, sinusoidal positions,
# its own qkv width and an MLP head.
LRA_TRANSFORMER = dict(
    cls_token=True,
    pooling="cls",
    pos="none",
    pos_emb="sinusoidal",
    qkv_dim=8,
    head_mlp=12,
    weight_init="xavier",
    use_bias=False,
)


def cases():
    out = []
    for name, spec in arch.ARCHS.items():
        out.append(pytest.param(name, False, {}, id=f"{name}-causal"))
        if spec.bidirectional_ok:
            out.append(pytest.param(name, True, {}, id=f"{name}-bidirectional"))
    out.append(pytest.param("transformer", True, LRA_TRANSFORMER, id="transformer-lra"))
    return out


def padded(real, length, seed):
    """``real`` [B, REAL] followed by random pad tokens up to ``length``, and its mask."""
    pad = jax.random.randint(jax.random.key(seed), (real.shape[0], length - REAL), 0, VOCAB)
    mask = jnp.arange(length)[None, :] < REAL
    return jnp.concatenate([real, pad], axis=1), jnp.broadcast_to(mask, (real.shape[0], length))


@pytest.mark.parametrize("name, bidirectional, options", cases())
def test_prediction_ignores_the_padding_after_the_example(name, bidirectional, options):
    model = arch.build(
        name,
        vocab_size=VOCAB,
        d_model=16,
        n_layers=1,
        head="classify",
        n_classes=3,
        bidirectional=bidirectional,
        max_len=16,
        **options,
    )
    real = jax.random.randint(jax.random.key(1), (2, REAL), 0, VOCAB)
    short, short_mask = padded(real, 8, seed=2)
    long, long_mask = padded(real, 13, seed=3)
    params = jax.jit(model.init)(jax.random.key(0), short, short_mask)
    # Perturb every parameter: biases and gains that start at zero would hide a leak.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(4), len(leaves))
    params = jax.tree.unflatten(
        tree,
        [
            p + 0.1 * jax.random.normal(k, p.shape, p.dtype)
            for p, k in zip(leaves, keys, strict=True)
        ],
    )
    apply = jax.jit(model.apply)
    a = apply(params, short, short_mask)
    b = apply(params, long, long_mask)
    assert np.isfinite(np.asarray(a)).all()
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # The property has teeth: without the mask the padding does leak into bidirectional
    # mixers (and into the pooled mean of every mixer).
    leaked = apply(params, long, jnp.ones_like(long_mask))
    assert not np.allclose(a, leaked, rtol=1e-4, atol=1e-5)
