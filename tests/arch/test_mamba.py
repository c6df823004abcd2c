"""The Mamba mixer: protocol, initialisation, and parity with transformers' Mamba."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from arch import params as P
from arch import protocol
from arch.mixers.mamba import Mamba


@pytest.mark.parametrize("length", [1, 2, 7, 16])
@pytest.mark.parametrize("impl", ["sequential", "associative"])
def test_parallel_equals_recurrent(length, impl):
    mixer = Mamba(d_model=16, d_state=4, impl=impl)
    x = jax.random.normal(jax.random.key(0), (2, length, 16))
    params = jax.jit(mixer.init)(jax.random.key(1), x)
    y = mixer.apply(params, x)
    y_rec, _ = protocol.recurrent_apply(mixer, params, x)
    np.testing.assert_allclose(y_rec, y, atol=1e-5, rtol=1e-5)
    y_pre, _ = protocol.prefill_then_step(mixer, params, x, split=length // 2 + 1)
    np.testing.assert_allclose(y_pre, y, atol=1e-5, rtol=1e-5)


def test_official_initialisation():
    mixer = Mamba(d_model=32, d_state=8, n_layers=4)
    params = jax.jit(mixer.init)(jax.random.key(0), jnp.zeros((1, 3, 32)))["params"]
    np.testing.assert_allclose(
        jnp.exp(params["A_log"]), np.tile(np.arange(1, 9), (64, 1)), rtol=1e-6
    )
    np.testing.assert_array_equal(params["D"], np.ones(64))
    dt = jax.nn.softplus(params["dt_bias"])
    assert float(dt.min()) >= 1e-4 - 1e-9 and float(dt.max()) <= 0.1 + 1e-6
    assert params["dt_proj"]["kernel"].shape == (2, 64)  # dt_rank = ceil(32 / 16)
    bound = 2**-0.5
    assert float(jnp.abs(params["dt_proj"]["kernel"]).max()) <= bound


def test_ssm_params_declare_their_rules():
    model = arch.build("mamba", vocab_size=11, d_model=16, n_layers=1)
    rules = arch.param_rules(model, jnp.zeros((1, 3), jnp.int32))
    mixer = rules["backbone"]["blocks_0"]["mixer"]
    # state-spaces/mamba: A_log and D are _no_weight_decay at the model's rate; dt_bias
    # (dt_proj.bias there) is a bias, not decayed.
    assert mixer["A_log"] == mixer["D"] == mixer["dt_bias"] == P.NO_DECAY
    assert mixer["in_proj"]["kernel"] == P.DEFAULT
    assert rules["backbone"]["embedding"]["embedding"] == P.NO_DECAY


def test_linear_inits_follow_the_official_code():
    """PyTorch's default Linear init U(+-1/sqrt(fan_in)); out_proj divided by sqrt(n_layer)
    (state-spaces/mamba mixer_seq_simple.py _init_weights, rescale_prenorm_residual)."""
    d, n_layers = 64, 4
    model = arch.build("mamba", vocab_size=11, d_model=d, n_layers=n_layers)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 3), jnp.int32))["params"]
    mixer = params["backbone"]["blocks_1"]["mixer"]
    for name, fan_in, scale in (
        ("in_proj", d, 1.0),
        ("x_proj", 2 * d, 1.0),
        ("out_proj", 2 * d, n_layers**-0.5),
    ):
        w = np.asarray(mixer[name]["kernel"])
        bound = scale / np.sqrt(fan_in)
        assert np.abs(w).max() <= bound
        # uniform on [-b, b]: std b / sqrt(3) (several thousand draws: within 5%)
        np.testing.assert_allclose(w.std(), bound / np.sqrt(3), rtol=0.05, err_msg=name)
    emb = np.asarray(params["backbone"]["embedding"]["embedding"])
    np.testing.assert_allclose(emb.std(), 0.02, rtol=0.1)


def test_bad_options():
    with pytest.raises(ValueError, match="dt_rank"):
        Mamba(d_model=16, dt_rank=0)
    with pytest.raises(ValueError, match="dt_min"):
        Mamba(d_model=16, dt_min=0.2, dt_max=0.1)


def test_parity_with_transformers_mamba():
    torch = pytest.importorskip("torch", reason="torch is a dev requirement (parity tests)")
    transformers = pytest.importorskip("transformers", reason="transformers is a dev requirement")
    from arch.convert.mamba import from_hf_state_dict

    torch.manual_seed(0)
    cfg = transformers.MambaConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        state_size=8,
        conv_kernel=4,
        expand=2,
        use_mambapy=False,
    )
    hf = transformers.MambaForCausalLM(cfg).eval()
    with torch.no_grad():  # random D and A so that the test is not trivially near identity
        for layer in hf.backbone.layers:
            layer.mixer.D.normal_()
            layer.mixer.A_log.add_(0.3 * torch.randn_like(layer.mixer.A_log))
    tokens = np.random.default_rng(0).integers(0, 64, (2, 13))
    with torch.no_grad():
        ref = hf(torch.as_tensor(tokens)).logits.numpy()
    params = from_hf_state_dict(hf.state_dict(), n_layers=2)
    model = arch.build(
        "mamba", vocab_size=64, d_model=32, n_layers=2, d_state=8, d_conv=4, expand=2
    )
    logits = model.apply(params, jnp.asarray(tokens))
    np.testing.assert_allclose(logits, ref, atol=1e-4, rtol=1e-4)
    # The recurrent form agrees with the peer too (generation after conversion).
    rec, _ = protocol.recurrent_apply(model, params, jnp.asarray(tokens))
    np.testing.assert_allclose(rec, ref, atol=1e-4, rtol=1e-4)


def test_load_checkpoint_errors(tmp_path):
    from arch.convert.common import CheckpointFormatError
    from arch.convert.mamba import from_hf_state_dict, load_checkpoint

    with pytest.raises(CheckpointFormatError, match="not found"):
        load_checkpoint(str(tmp_path / "missing.bin"))
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"not a checkpoint")
    pytest.importorskip("torch", reason="reading .bin files needs torch")
    with pytest.raises(CheckpointFormatError, match="corrupt"):
        load_checkpoint(str(bad))
    with pytest.raises(CheckpointFormatError, match="not a Mamba state dict"):
        from_hf_state_dict({"foo.weight": np.zeros(3)}, n_layers=1)
