"""RG-LRU (Griffin/Hawk): the recurrence against a float64 NumPy re-derivation of the
paper's equations, every implementation against the lax.scan reference, and the block
against transformers' RecurrentGemmaRecurrentBlock on random weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from arch.mixers.rglru import RGLRUBlock
from kernels.rglru import MAX_SQRT_GRADIENT, C, rg_lru, sqrt_bounded_derivative


def inputs(length, width=6, batch=2, seed=0, dtype=jnp.float32):
    r = np.random.default_rng(seed)
    x = r.normal(size=(batch, length, width))
    gates = 1 / (1 + np.exp(-r.normal(size=(2, batch, length, width))))
    a_param = r.normal(size=width)
    h0 = r.normal(size=(batch, width))
    reset = np.zeros((batch, length), bool)
    reset[:, 0] = True
    reset[1, length // 2] = True  # a second document starts mid-sequence
    cast = lambda v: jnp.asarray(v, dtype)  # noqa: E731
    return (cast(x), cast(gates[0]), cast(gates[1]), cast(a_param), cast(h0), reset), (
        x,
        gates,
        a_param,
        h0,
        reset,
    )


def numpy_rg_lru(x, gates, a_param, h0, reset):
    """Griffin eqs. 3-4, one step at a time, float64."""
    i_gate, r_gate = gates
    a = np.exp(-np.logaddexp(0.0, a_param))  # softplus(a_param) = -log a
    h, out = h0.copy(), np.zeros_like(x)
    for t in range(x.shape[1]):
        a_t = a ** (C * r_gate[:, t])
        scale = np.sqrt(1 - a_t**2)
        restart = reset[:, t, None]
        a_t, scale = np.where(restart, 0.0, a_t), np.where(restart, 1.0, scale)
        h = a_t * h + scale * i_gate[:, t] * x[:, t]
        out[:, t] = h
    return out, h


def test_rg_lru_is_griffin_eqs_3_4():
    (x, ig, rg, a, h0, reset), raw = inputs(23)
    hs, h = rg_lru(x, ig, rg, a, h0, reset=reset, impl="sequential")
    expected, expected_h = numpy_rg_lru(*raw)
    np.testing.assert_allclose(hs, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h, expected_h, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "impl, dtype, length",
    [
        ("chunked", jnp.float32, 33),  # several chunks of 8 and a partial one
        ("chunked", jnp.bfloat16, 33),
    ],
)  # "associative" and length 1: tests/kernels/test_impls.py runs linear_scan over them
def test_rg_lru_impls_match_the_scan_reference(impl, dtype, length):
    (x, ig, rg, a, h0, reset), _ = inputs(length, dtype=dtype)
    options = {"chunk_size": 8} if impl == "chunked" else {}

    def run(impl, **options):
        def loss(x, a):
            hs, h = rg_lru(x, ig, rg, a, h0, reset=reset, impl=impl, **options)
            return (hs**2).sum() + (h**2).sum(), (hs, h)

        return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(x, a)

    (_, (hs, h)), grads = run("sequential")
    (_, (hs2, h2)), grads2 = run(impl, **options)
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    np.testing.assert_allclose(hs2, hs, rtol=tol, atol=tol)
    np.testing.assert_allclose(h2, h, rtol=tol, atol=tol)
    for g2, g in zip(grads2, grads, strict=True):
        np.testing.assert_allclose(
            np.asarray(g2, np.float32), np.asarray(g, np.float32), rtol=10 * tol, atol=10 * tol
        )


def test_sqrt_gradient_is_bounded_near_zero():
    grad = jax.grad(sqrt_bounded_derivative)
    np.testing.assert_allclose(grad(0.0), MAX_SQRT_GRADIENT, rtol=1e-6)
    np.testing.assert_allclose(grad(0.25), 1.0, rtol=1e-6)  # 1 / (2 sqrt(x)) away from 0


def test_block_matches_transformers_recurrent_block():
    torch = pytest.importorskip("torch")
    rg = pytest.importorskip("transformers.models.recurrent_gemma.modeling_recurrent_gemma")
    from transformers import RecurrentGemmaConfig

    d, width, heads, length = 16, 24, 3, 11
    config = RecurrentGemmaConfig(
        hidden_size=d, lru_width=width, num_attention_heads=heads, num_hidden_layers=2,
        conv1d_width=4, intermediate_size=32, vocab_size=32,
    )  # fmt: skip
    torch.manual_seed(0)
    block = rg.RecurrentGemmaRecurrentBlock(config, 0).eval()
    with torch.no_grad():  # every tensor random, not left at its init
        for p in block.parameters():
            p.copy_(0.5 * torch.randn_like(p))
    t = lambda p: jnp.asarray(p.detach().numpy())  # noqa: E731
    lru = block.rg_lru
    params = {
        "linear_x": {"kernel": t(block.linear_x.weight).T, "bias": t(block.linear_x.bias)},
        "linear_y": {"kernel": t(block.linear_y.weight).T, "bias": t(block.linear_y.bias)},
        "linear_out": {"kernel": t(block.linear_out.weight).T, "bias": t(block.linear_out.bias)},
        "conv_weight": t(block.conv_1d.weight)[:, 0, :].T,  # [width, 1, k] -> [k, width]
        "conv_bias": t(block.conv_1d.bias),
        "input_gate_weight": t(lru.input_gate_weight),
        "input_gate_bias": t(lru.input_gate_bias),
        "recurrence_gate_weight": t(lru.recurrent_gate_weight),
        "recurrence_gate_bias": t(lru.recurrent_gate_bias),
        "a_param": t(lru.recurrent_param),
    }
    x = np.random.default_rng(1).normal(size=(2, length, d)).astype(np.float32)
    with torch.no_grad():
        expected, _ = block(
            torch.from_numpy(x),
            position_ids=torch.arange(length)[None].repeat(2, 1),
            attention_mask=None,
            use_cache=False,
        )
    ours = RGLRUBlock(d, n_layers=2, lru_width=width, n_heads=heads)
    y = ours.apply({"params": params}, jnp.asarray(x))
    np.testing.assert_allclose(y, expected.numpy(), rtol=1e-4, atol=1e-4)
    # The same numbers token by token (prefill 4, then step).
    from arch import protocol

    y2, _ = protocol.prefill_then_step(ours, {"params": params}, jnp.asarray(x), 4)
    np.testing.assert_allclose(y2, expected.numpy(), rtol=1e-4, atol=1e-4)


def test_init_follows_recurrentgemma():
    block = RGLRUBlock(64, n_layers=4, n_heads=2)
    params = jax.jit(block.init)(jax.random.key(0), jnp.zeros((1, 3, 64)))["params"]
    a = np.exp(-np.logaddexp(0.0, np.asarray(params["a_param"])))
    assert 0.9 <= a.min() and a.max() <= 0.999  # a in [0.9, 0.999]
    np.testing.assert_allclose(params["linear_x"]["kernel"].std(), 64**-0.5, rtol=0.1)
    np.testing.assert_allclose(params["linear_out"]["kernel"].std(), (2 / 4 / 64) ** 0.5, rtol=0.1)
    np.testing.assert_allclose(params["input_gate_weight"].std(), (0.01 / 32) ** 0.5, rtol=0.1)


def test_hawk_is_registered_with_griffins_block_layout():
    model = arch.build("hawk", vocab_size=7, d_model=8, n_layers=1)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 3), jnp.int32))["params"]
    block = params["backbone"]["blocks_0"]
    assert set(block["norm1"]) == {"scale"}  # RMSNorm
    assert block["channel_mixer"]["gate"]["kernel"].shape == (8, 24)  # GeGLU, expansion 3
