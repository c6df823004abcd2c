"""RWKV-6 (Finch): the time-mix layer against a float64 NumPy re-derivation of the
paper's equations (RWKV-LM's RWKV_Tmix_x060, written out), and the chunked WKV-6
against the lax.scan reference (impl x dtype x length). No PyTorch reference runs on
CPU here: RWKV-LM's layer needs its CUDA kernel and transformers has no RWKV-6."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from arch import params as P
from arch.mixers.rwkv6 import RWKV6TimeMix
from kernels.wkv6 import wkv6

D, HEAD, LENGTH = 16, 4, 9


def numpy_time_mix(p, x):
    """Finch time mixing (eqs. 11-21), one token at a time, float64."""
    p = {k: np.asarray(v, np.float64) for k, v in flat(p).items()}
    batch, length, d = x.shape
    heads = d // HEAD
    state = np.zeros((batch, heads, HEAD, HEAD))
    prev = np.zeros((batch, d))
    out = np.zeros_like(x)
    w2 = p["time_maa_w2"]
    for t in range(length):
        xt = x[:, t]
        xx = prev - xt
        lora = np.tanh((xt + xx * p["time_maa_x"]) @ p["time_maa_w1"]).reshape(batch, 5, -1)
        mw, mk, mv, mr, mg = (lora[:, i] @ w2[i] for i in range(5))
        xw, xk, xv, xr, xg = (
            xt + xx * (p[f"time_maa_{n}"] + m)
            for n, m in zip("wkvrg", (mw, mk, mv, mr, mg), strict=True)
        )
        r = xr @ p["receptance/kernel"]
        k = xk @ p["key/kernel"]
        v = xv @ p["value/kernel"]
        g = xg @ p["gate/kernel"]
        g = g / (1 + np.exp(-g))
        w = p["time_decay"] + np.tanh(xw @ p["time_decay_w1"]) @ p["time_decay_w2"]
        decay = np.exp(-np.exp(w))
        y = np.zeros((batch, d))
        for h in range(heads):
            sl = slice(h * HEAD, (h + 1) * HEAD)
            kv = k[:, sl, None] * v[:, None, sl]
            y[:, sl] = np.einsum(
                "bn,bnm->bm", r[:, sl], p["time_faaaa"][h][:, None] * kv + state[:, h]
            )
            state[:, h] = decay[:, sl, None] * state[:, h] + kv
            # GroupNorm per head, eps 1e-5 * 8^2
            grp = y[:, sl]
            mean, var = grp.mean(-1, keepdims=True), grp.var(-1, keepdims=True)
            y[:, sl] = (grp - mean) / np.sqrt(var + 64e-5)
        y = y * p["ln_x/scale"] + p["ln_x/bias"]
        out[:, t] = (y * g) @ p["output/kernel"]
        prev = xt
    return out


def flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}/"))
        else:
            out[prefix + k] = v
    return out


def test_time_mix_is_finchs_equations():
    module = RWKV6TimeMix(D, layer_id=1, n_layers=3, head_size=HEAD)
    x = np.random.default_rng(0).normal(size=(2, LENGTH, D)).astype(np.float32)
    variables = jax.jit(module.init)(jax.random.key(0), jnp.asarray(x))
    leaves, tree = jax.tree.flatten(variables)  # every tensor random, not left at its init
    keys = jax.random.split(jax.random.key(1), len(leaves))
    variables = jax.tree.unflatten(
        tree, [a + 0.3 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys, strict=True)]
    )
    ours = module.apply(variables, jnp.asarray(x))
    expected = numpy_time_mix(variables["params"], x.astype(np.float64))
    np.testing.assert_allclose(ours, expected, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize(
    "dtype",
    [
        jnp.float32,
        pytest.param(
            jnp.bfloat16, marks=pytest.mark.slow(reason="bf16: the f32 case checks the form")
        ),
    ],
)
@pytest.mark.parametrize("length", [37])  # chunks of 8 and a partial one; 1: the protocol
def test_chunked_wkv6_matches_the_scan_reference(dtype, length):
    r = np.random.default_rng(2)
    cast = lambda v: jnp.asarray(v, dtype)  # noqa: E731
    rr, k, v = (cast(r.normal(size=(2, length, 3, 4))) for _ in range(3))
    log_w = -jnp.exp(cast(2 * r.normal(size=(2, length, 3, 4))))  # strong and weak decays
    u = jnp.asarray(r.normal(size=(3, 4)), jnp.float32)
    s0 = jnp.asarray(r.normal(size=(2, 3, 4, 4)), jnp.float32)

    def run(impl, **options):
        def loss(k, log_w):
            y, s = wkv6(rr, k, v, log_w, u, s0, impl=impl, **options)
            return (y**2).sum() + (s**2).sum(), (y, s)

        return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(k, log_w)

    (_, out), grads = run("sequential")
    (_, out2), grads2 = run("chunked", chunk_size=8)
    for ours, ref in zip((*out2, *grads2), (*out, *grads), strict=True):
        ours, ref = np.asarray(ours, np.float32), np.asarray(ref, np.float32)
        scale = max(1.0, np.abs(ref).max())
        tol = 1e-5 if dtype == jnp.float32 else 1e-2
        np.testing.assert_allclose(ours / scale, ref / scale, atol=tol)


def test_init_and_rules_follow_rwkv_lm():
    model = arch.build("rwkv6", vocab_size=7, d_model=64, n_layers=4, head_size=16)
    tokens = jnp.zeros((1, 3), jnp.int32)
    params = jax.jit(model.init)(jax.random.key(0), tokens)["params"]["backbone"]["blocks_1"]
    mix = params["mixer"]
    np.testing.assert_array_equal(mix["output"]["kernel"], 0.0)  # att.output zero
    np.testing.assert_array_equal(mix["time_maa_w1"], 0.0)
    np.testing.assert_allclose(mix["ln_x"]["scale"], (2 / 4) ** 0.7)  # ((1+i)/n)^0.7
    assert params["channel_mixer"]["key"]["kernel"].shape == (64, 224)  # 3.5 d // 32 * 32
    rules = arch.param_rules(model, tokens)["backbone"]["blocks_1"]["mixer"]
    assert rules["time_decay"] == P.ParamRule(lr_mult=2.0, wd_mult=0.0)
    assert rules["time_faaaa"] == rules["time_maa_w1"] == P.NO_DECAY
    assert rules["key"]["kernel"] == P.DEFAULT
