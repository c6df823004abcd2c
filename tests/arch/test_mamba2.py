"""Mamba-2: the SSD chunked form against the lax.scan reference (impl x dtype x
length), and the whole model against transformers' Mamba2ForCausalLM on random weights
through the converter."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from arch import protocol
from arch.mixers.mamba2 import Mamba2
from kernels.ssd import ssd


def inputs(length, dtype=jnp.float32, heads=4, head_dim=3, groups=2, state=5, seed=0):
    r = np.random.default_rng(seed)
    cast = lambda v: jnp.asarray(v, dtype)  # noqa: E731
    x = cast(r.normal(size=(2, length, heads, head_dim)))
    dt = cast(np.log1p(np.exp(r.normal(size=(2, length, heads)))))
    a = -jnp.asarray(np.exp(r.normal(size=heads)), jnp.float32)
    b, c = (cast(r.normal(size=(2, length, groups, state))) for _ in range(2))
    h0 = jnp.asarray(r.normal(size=(2, heads, head_dim, state)), jnp.float32)
    return x, dt, a, b, c, jnp.asarray(r.normal(size=heads), jnp.float32), h0


def numpy_ssd(x, dt, a, b, c, d, h0):
    """h_t = exp(dt_t A) h_t-1 + dt_t x_t B_t^T, y_t = h_t C_t + D x_t, float64."""
    x, dt, a, b, c, d, h = (np.asarray(v, np.float64) for v in (x, dt, a, b, c, d, h0))
    rep = x.shape[2] // b.shape[2]
    b, c = np.repeat(b, rep, axis=2), np.repeat(c, rep, axis=2)
    ys = np.zeros_like(x)
    for t in range(x.shape[1]):
        h = np.exp(dt[:, t] * a)[..., None, None] * h + np.einsum(
            "bhp,bhn->bhpn", dt[:, t, :, None] * x[:, t], b[:, t]
        )
        ys[:, t] = np.einsum("bhpn,bhn->bhp", h, c[:, t]) + d[:, None] * x[:, t]
    return ys, h


def test_sequential_ssd_is_the_recurrence():
    args = inputs(9)
    y, h = ssd(*args[:5], d=args[5], h0=args[6], impl="sequential")
    y_ref, h_ref = numpy_ssd(*args)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "dtype",
    [
        jnp.float32,
        pytest.param(
            jnp.bfloat16, marks=pytest.mark.slow(reason="bf16: the f32 case checks the form")
        ),
    ],
)
@pytest.mark.parametrize("length", [37])  # four chunks of 8 and a partial one; 1: the protocol
def test_chunked_ssd_matches_the_scan_reference(dtype, length):
    x, dt, a, b, c, d, h0 = inputs(length, dtype)

    def run(impl, **options):
        def loss(x, dt, a, b, h0):  # every input the chunk-end recurrence touches
            y, h = ssd(x, dt, a, b, c, d, h0, impl=impl, **options)
            return (y**2).sum() + (h**2).sum(), (y, h)

        return jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4), has_aux=True)(x, dt, a, b, h0)

    (_, out), grads = run("sequential")
    (_, out2), grads2 = run("chunked", chunk_size=8)
    tol = 1e-4 if dtype == jnp.float32 else 2e-2
    for ours, ref in zip((*out2, *grads2), (*out, *grads), strict=True):
        np.testing.assert_allclose(
            np.asarray(ours, np.float32), np.asarray(ref, np.float32), rtol=tol, atol=tol
        )


def test_parity_with_transformers_mamba2():
    torch = pytest.importorskip("torch", reason="torch is a dev requirement (parity tests)")
    transformers = pytest.importorskip("transformers", reason="transformers is a dev requirement")
    from arch.convert.mamba2 import from_hf_state_dict

    torch.manual_seed(0)
    cfg = transformers.Mamba2Config(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, state_size=8, expand=2,
        head_dim=16, num_heads=4, n_groups=2, conv_kernel=4, chunk_size=8,
        tie_word_embeddings=True,
    )  # fmt: skip
    hf = transformers.Mamba2ForCausalLM(cfg).eval()
    with torch.no_grad():  # every tensor random, not left at its init
        for name, p in hf.named_parameters():
            if name != "lm_head.weight":
                p.add_(0.3 * torch.randn_like(p))
    tokens = np.random.default_rng(0).integers(0, 64, (2, 13))
    with torch.no_grad():
        ref = hf(torch.as_tensor(tokens), use_cache=False).logits.numpy()
    params = from_hf_state_dict(hf.state_dict(), n_layers=2)
    model = arch.build(
        "mamba2", vocab_size=64, d_model=32, n_layers=2, d_state=8, head_dim=16, n_groups=2,
        chunk_size=8,
    )  # fmt: skip
    logits = model.apply(params, jnp.asarray(tokens))
    np.testing.assert_allclose(logits, ref, atol=1e-4, rtol=1e-4)
    rec, _ = protocol.prefill_then_step(model, params, jnp.asarray(tokens), 5)
    np.testing.assert_allclose(rec, ref, atol=1e-4, rtol=1e-4)


def test_converter_refuses_an_untied_head_and_other_models():
    from arch.convert.common import CheckpointFormatError
    from arch.convert.mamba2 import from_hf_state_dict

    state = {
        "backbone.embeddings.weight": np.ones((4, 2)),
        "backbone.layers.0.mixer.norm.weight": np.ones(2),
        "lm_head.weight": np.zeros((4, 2)),
    }
    with pytest.raises(CheckpointFormatError, match="not tied"):
        from_hf_state_dict(state, n_layers=1)
    with pytest.raises(CheckpointFormatError, match="not a Mamba-2 state dict"):
        from_hf_state_dict({"backbone.embeddings.weight": np.ones((4, 2))}, n_layers=1)


def test_init_and_bad_options():
    m = Mamba2(64, n_layers=4, d_state=16, head_dim=32)
    p = jax.jit(m.init)(jax.random.key(0), jnp.zeros((1, 3, 64)))["params"]
    a = np.exp(np.asarray(p["A_log"]))
    assert 1 <= a.min() and a.max() <= 16  # A ~ U(1, 16) (mamba2.py A_init_range)
    dt = np.log1p(np.exp(np.asarray(p["dt_bias"])))
    assert 1e-3 * 0.999 <= dt.min() and dt.max() <= 0.1 * 1.001
    np.testing.assert_array_equal(p["D"], 1.0)
    bound = 4**-0.5 / np.sqrt(128)  # out_proj: PyTorch default / sqrt(n_layer)
    assert np.abs(np.asarray(p["out_proj"]["kernel"])).max() <= bound
    with pytest.raises(ValueError, match="not divisible by head_dim"):
        Mamba2(64, head_dim=48)
    with pytest.raises(ValueError, match="must divide n_heads"):
        Mamba2(64, head_dim=32, n_groups=3)
