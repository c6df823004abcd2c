"""RWKV-4 TimeMix / ChannelMix: protocol, initialisation, parity with transformers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from arch import params as P
from arch import protocol
from arch.mixers.rwkv import RWKVChannelMix, RWKVTimeMix


def randomised(params, seed=0):
    """Random values everywhere: the published init zeroes projections (a weak test)."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    new = [0.3 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
    return jax.tree_util.tree_unflatten(tree, new)


@pytest.mark.parametrize("cls", [RWKVTimeMix, RWKVChannelMix])
@pytest.mark.parametrize("length", [1, 2, 7, 16])
def test_parallel_equals_recurrent(cls, length):
    mixer = cls(d_model=8, layer_id=1, n_layers=3)
    x = jax.random.normal(jax.random.key(0), (2, length, 8))
    params = randomised(mixer.init(jax.random.key(1), x))
    y = mixer.apply(params, x)
    y_rec, _ = protocol.recurrent_apply(mixer, params, x)
    np.testing.assert_allclose(y_rec, y, atol=1e-5, rtol=1e-5)
    y_pre, _ = protocol.prefill_then_step(mixer, params, x, split=length // 2 + 1)
    np.testing.assert_allclose(y_pre, y, atol=1e-5, rtol=1e-5)


def test_published_initialisation():
    d, n_layers = 16, 4
    for layer in range(n_layers):
        mixer = RWKVTimeMix(d_model=d, layer_id=layer, n_layers=n_layers)
        p = mixer.init(jax.random.key(0), jnp.zeros((1, 2, d)))["params"]
        decay = np.asarray(p["time_decay"])
        assert np.all(np.diff(decay) > 0) and decay[0] == pytest.approx(-5.0)
        assert decay[-1] == pytest.approx(3.0)  # -5 + 8 at the last channel
        zigzag = np.asarray(p["time_first"]) - np.log(0.3)
        np.testing.assert_allclose(zigzag[:3], [0.0, 0.5, -0.5], atol=1e-6)
        assert np.all((p["time_mix_k"] >= 0) & (p["time_mix_k"] <= 1))
        assert float(jnp.abs(p["output"]["kernel"]).max()) == 0.0  # zero-init (scale_init 0)
    # Deeper layers mix in more of the current token (ratio_1_to_almost0 shrinks).
    first = RWKVTimeMix(d_model=d, layer_id=0, n_layers=n_layers)
    last = RWKVTimeMix(d_model=d, layer_id=n_layers - 1, n_layers=n_layers)
    mk = [
        m.init(jax.random.key(0), jnp.zeros((1, 2, d)))["params"]["time_mix_k"]
        for m in (first, last)
    ]
    assert float(mk[1].mean()) > float(mk[0].mean())


def test_ssm_params_declare_their_rules():
    model = arch.build("rwkv", vocab_size=11, d_model=8, n_layers=1)
    block = arch.param_rules(model, jnp.zeros((1, 3), jnp.int32))["backbone"]["blocks_0"]
    # RWKV-LM configure_optimizers: time_mix 1x, time_decay 2x, time_first 3x, no decay.
    assert block["mixer"]["time_decay"] == P.ParamRule(lr_mult=2.0, wd_mult=0.0)
    assert block["mixer"]["time_first"] == P.ParamRule(lr_mult=3.0, wd_mult=0.0)
    for name in ("time_mix_k", "time_mix_v", "time_mix_r"):
        assert block["mixer"][name] == P.NO_DECAY
    assert block["channel_mixer"]["time_mix_r"] == P.NO_DECAY
    assert block["mixer"]["key"]["kernel"] == P.DEFAULT


def test_inits_follow_rwkv_lm():
    """RWKV-LM generate_init_weight: zero key/receptance/output (att) and
    receptance/value (ffn); orthogonal value (gain 1), ffn key (gain 2) and head
    (gain 0.5 sqrt(vocab / d)); embedding U(+-1e-4)."""
    d, vocab = 16, 64
    model = arch.build("rwkv", vocab_size=vocab, d_model=d, n_layers=2)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 3), jnp.int32))["params"]
    block = params["backbone"]["blocks_1"]
    for module, name in (
        ("mixer", "key"),
        ("mixer", "receptance"),
        ("mixer", "output"),
        ("channel_mixer", "receptance"),
        ("channel_mixer", "value"),
    ):
        assert not np.asarray(block[module][name]["kernel"]).any(), (module, name)

    def check_orthogonal(w, gain):  # [in, out]: the rows (or columns) are orthonormal * gain
        w = np.asarray(w, np.float64) / gain
        small = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        np.testing.assert_allclose(small, np.eye(len(small)), atol=1e-5)

    check_orthogonal(block["mixer"]["value"]["kernel"], 1.0)
    check_orthogonal(block["channel_mixer"]["key"]["kernel"], 2.0)
    check_orthogonal(params["head"]["kernel"], 0.5 * np.sqrt(vocab / d))
    emb = np.asarray(params["backbone"]["embedding"]["embedding"])
    assert 0 < np.abs(emb).max() <= 1e-4


@pytest.fixture(scope="module")
def hf_rwkv():
    torch = pytest.importorskip("torch", reason="torch is a dev requirement (parity tests)")
    transformers = pytest.importorskip("transformers", reason="transformers is a dev requirement")
    torch.manual_seed(0)
    cfg = transformers.RwkvConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        attention_hidden_size=32,
        intermediate_size=128,
        rescale_every=0,
    )
    hf = transformers.RwkvForCausalLM(cfg).eval()
    with torch.no_grad():  # re-randomise the time_* parameters so the test is not trivial
        for name, p in hf.named_parameters():
            if "time_mix" in name:
                p.copy_(torch.rand_like(p))
            elif "time_" in name:
                p.copy_(torch.randn_like(p))
    tokens = np.random.default_rng(0).integers(0, 64, (2, 13))
    with torch.no_grad():
        logits = hf(torch.as_tensor(tokens)).logits.numpy()
    return hf.state_dict(), tokens, logits


def test_parity_with_transformers_rwkv(hf_rwkv):
    from arch.convert.rwkv import from_hf_state_dict

    state_dict, tokens, ref = hf_rwkv
    params = from_hf_state_dict(state_dict, n_layers=2)
    model = arch.build("rwkv", vocab_size=64, d_model=32, n_layers=2)
    np.testing.assert_allclose(model.apply(params, jnp.asarray(tokens)), ref, atol=1e-4, rtol=1e-4)
    rec, _ = protocol.recurrent_apply(model, params, jnp.asarray(tokens))
    np.testing.assert_allclose(rec, ref, atol=1e-4, rtol=1e-4)


def test_blinkdl_names_convert_to_the_same_params(hf_rwkv):
    from arch.convert.rwkv import from_blinkdl_state_dict, from_hf_state_dict
    from tests.hf_models import to_blinkdl

    state_dict = hf_rwkv[0]
    blink = to_blinkdl(state_dict)
    a = from_hf_state_dict(state_dict, n_layers=2)
    b = from_blinkdl_state_dict(blink, n_layers=2)
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def test_conversion_errors():
    from arch.convert.common import CheckpointFormatError
    from arch.convert.rwkv import from_blinkdl_state_dict

    with pytest.raises(CheckpointFormatError, match="emb.weight"):
        from_blinkdl_state_dict({"x": np.zeros(1)}, n_layers=1)
