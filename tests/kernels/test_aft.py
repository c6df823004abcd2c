"""AFT kernels against a float64 NumPy re-derivation of the paper's equations (double loop)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import aft

B, L, D, HEADS, WINDOW = 2, 7, 8, 2, 3


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_aft(q, k, v, bias, causal):
    """Paper eq. 2, term by term: bias(t, t') -> [D] is w_{t,t'} per channel."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    y = np.zeros_like(q)
    for t in range(q.shape[1]):
        num = np.zeros((q.shape[0], q.shape[2]))
        den = np.zeros_like(num)
        for tp in range(q.shape[1]):
            if causal and tp > t:
                continue
            e = np.exp(k[:, tp] + bias(t, tp))
            num += e * v[:, tp]
            den += e
        y[:, t] = sigmoid(q[:, t]) * num / den
    return y


def biases(w, w_conv, causal):
    """The pairwise bias of each variant, written from the paper's definitions."""
    w = np.asarray(w, np.float64)
    w_conv = np.asarray(w_conv, np.float64)
    size = w_conv.shape[1]

    def conv(t, tp):
        tap = t - tp + (0 if causal else size // 2)  # causal: taps look back; else centred
        per_head = w_conv[:, tap] if 0 <= tap < size else np.zeros(HEADS)
        return np.repeat(per_head, D // HEADS)  # head i covers channels [i*D/H, (i+1)*D/H)

    return {
        "full": lambda t, tp: w[t, tp],
        "local": lambda t, tp: w[t, tp] if abs(t - tp) < WINDOW else 0.0,  # eq. 3
        "simple": lambda t, tp: 0.0,
        "conv": conv,
    }


def run_kernel(variant, q, k, v, w, w_conv, causal, impl="auto", mask=None):
    if variant == "full":
        return aft.aft_full(q, k, v, w, causal=causal, mask=mask, impl=impl)
    if variant == "local":
        return aft.aft_local(q, k, v, w, WINDOW, causal=causal, mask=mask, impl=impl)
    if variant == "simple":
        return aft.aft_simple(q, k, v, causal=causal, mask=mask, impl=impl)
    return aft.aft_conv(q, k, v, w_conv, HEADS, causal=causal, mask=mask, impl=impl)


def inputs(seed=0, k_scale=1.0, k_offset=0.0):
    keys = jax.random.split(jax.random.key(seed), 5)
    q, k, v = (jax.random.normal(keys[i], (B, L, D)) for i in range(3))
    k = k_offset + k_scale * k
    w = jax.random.normal(keys[3], (L + 2, L + 2))  # max_len > L: the top-left block is used
    w_conv = jax.random.normal(keys[4], (HEADS, WINDOW))
    return q, k, v, w, w_conv


VARIANTS = ["full", "local", "simple", "conv"]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("causal", [True, False])
def test_matches_numpy_double_loop(variant, causal):
    q, k, v, w, w_conv = inputs()
    y = run_kernel(variant, q, k, v, w, w_conv, causal)
    want = numpy_aft(q, k, v, biases(w, w_conv, causal)[variant], causal)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("causal", [True, False])
def test_large_keys_stay_finite_and_exact(variant, causal):
    # |k| ~ 80: exp(k + w) overflows float32 (> 3.4e38 near 88) without the max trick,
    # and keys of both signs make early causal rows underflow if the max is global.
    q, k, v, w, w_conv = inputs(seed=1)
    k = 80.0 * jnp.sign(k) + k
    y = run_kernel(variant, q, k, v, w, w_conv, causal)
    assert np.all(np.isfinite(y))
    want = numpy_aft(q, k, v, biases(w, w_conv, causal)[variant], causal)
    # float32 keeps k + w ~ 80 to ~5e-6 absolute, so the weights to ~5e-6 relative.
    np.testing.assert_allclose(y, want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_matmul_form_of_aft_full(causal):
    # The paper's fast form subtracts maxima too: keys around 90 (exp overflows) stay exact.
    q, k, v, w, w_conv = inputs(seed=2, k_scale=3.0, k_offset=90.0)
    y = aft.aft_full(q, k, v, w, causal=causal, impl="matmul")
    assert np.all(np.isfinite(y))
    want = numpy_aft(q, k, v, biases(w, w_conv, causal)["full"], causal)
    np.testing.assert_allclose(y, want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("impl", ["sequential", "associative"])
def test_aft_simple_running_state_impls(impl):
    q, k, v, *_ = inputs(seed=3, k_scale=40.0)
    y = aft.aft_simple(q, k, v, causal=True, impl=impl)
    want = numpy_aft(q, k, v, lambda t, tp: 0.0, causal=True)
    np.testing.assert_allclose(y, want, rtol=2e-5, atol=2e-5)
    # the chunked form continues a state: two chunks == one pass
    state = aft.aft_simple_init_state(B, D)
    state, y1 = aft.aft_simple_chunk(state, q[:, :3], k[:, :3], v[:, :3], impl=impl)
    _, y2 = aft.aft_simple_chunk(state, q[:, 3:], k[:, 3:], v[:, 3:], impl=impl)
    np.testing.assert_allclose(jnp.concatenate([y1, y2], 1), y, rtol=1e-6, atol=1e-6)


def test_gradients_finite_with_large_keys():
    q, k, v, w, w_conv = inputs(seed=4)
    k = 80.0 * jnp.sign(k) + k

    def loss(k, w):
        return jnp.sum(aft.aft_full(q, k, v, w, causal=True) ** 2)

    gk, gw = jax.grad(loss, argnums=(0, 1))(k, w)
    assert np.all(np.isfinite(gk)) and np.all(np.isfinite(gw))
    assert np.any(gw != 0)


def test_conv_reparam_normalises_each_head():
    w_conv = jnp.asarray([[1.0, 2.0, 6.0], [0.0, -1.0, 1.0]])
    gain, shift = jnp.asarray([2.0, 0.5]), jnp.asarray([0.1, -3.0])
    got = aft.conv_reparam(w_conv, gain, shift)
    w = np.asarray(w_conv, np.float64)
    want = (
        np.asarray(gain)[:, None]
        * (w - w.mean(1, keepdims=True))
        / (w.std(1, keepdims=True) + 1e-5)
        + np.asarray(shift)[:, None]
    )
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_bad_inputs_raise_with_a_sentence():
    q, k, v, w, w_conv = inputs()
    with pytest.raises(ValueError, match="one shape"):
        aft.aft_simple(q, k[:, :3], v, causal=True)
    with pytest.raises(ValueError, match="max_len"):
        aft.aft_full(q, k, v, w[:3, :3], causal=True)
    with pytest.raises(ValueError, match="n_heads"):
        aft.aft_conv(q, k, v, w_conv, 3, causal=True)
    with pytest.raises(ValueError, match="unknown impl"):
        aft.aft_full(q, k, v, w, causal=True, impl="nope")


# ------------------------------------------------------------------ padding mask


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("causal", [True, False])
def test_mask_leaves_padded_keys_out(variant, causal):
    # Example 0: 5 real tokens then 2 pads; example 1: 2 real then 5. Real rows equal the
    # double loop over the real prefix alone; pad rows are finite.
    q, k, v, w, w_conv = inputs(seed=5)
    k = k.at[:, -1].set(200.0)  # a huge pad key: would dominate every row if it counted
    lengths = np.array([5, 2])
    mask = jnp.asarray(np.arange(L)[None, :] < lengths[:, None])
    y = run_kernel(variant, q, k, v, w, w_conv, causal, mask=mask)
    assert np.all(np.isfinite(y))
    for b, n in enumerate(lengths):
        one = lambda a, b=b, n=n: a[b : b + 1, :n]  # noqa: E731
        want = numpy_aft(one(q), one(k), one(v), biases(w, w_conv, causal)[variant], causal)
        np.testing.assert_allclose(y[b : b + 1, :n], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("causal", [True, False])
def test_mask_in_matmul_form_and_all_padding_rows(causal):
    q, k, v, w, _ = inputs(seed=6)
    mask = jnp.asarray(np.arange(L)[None, :] < np.array([[4], [0]]))  # example 1: no real key
    y = aft.aft_full(q, k, v, w, causal=causal, mask=mask, impl="matmul")
    assert np.all(np.isfinite(y))
    want = numpy_aft(q[:1, :4], k[:1, :4], v[:1, :4], lambda t, tp: np.float64(w[t, tp]), causal)
    np.testing.assert_allclose(y[:1, :4], want, rtol=2e-5, atol=2e-5)
    exact = aft.aft_full(q, k, v, w, causal=causal, mask=mask)
    assert np.all(np.isfinite(exact))


def test_mask_gradients_finite_and_zero_at_padding():
    q, k, v, w, _ = inputs(seed=7)
    mask = jnp.asarray(np.arange(L)[None, :] < np.array([[5], [7]]))

    def loss(k, v):
        y = aft.aft_full(q, k, v, w, causal=False, mask=mask)
        return jnp.sum(jnp.where(mask[..., None], y, 0.0) ** 2)

    gk, gv = jax.grad(loss, argnums=(0, 1))(k, v)
    assert np.all(np.isfinite(gk)) and np.all(np.isfinite(gv))
    assert np.all(gk[0, 5:] == 0) and np.all(gv[0, 5:] == 0)


def test_mask_of_the_wrong_shape_raises():
    q, k, v, *_ = inputs()
    with pytest.raises(ValueError, match="mask must be"):
        aft.aft_simple(q, k, v, causal=False, mask=jnp.ones((B, L + 1), bool))


# --------------------------------------------------------- factorised bias (U V^T)


def low_rank(seed=8, rank=3, size=L + 2):
    ku, kv = jax.random.split(jax.random.key(seed))
    u, v = jax.random.normal(ku, (size, rank)), jax.random.normal(kv, (size, rank))
    dense = jnp.asarray(np.asarray(u, np.float64) @ np.asarray(v, np.float64).T)
    return aft.LowRankBias(u, v), dense


@pytest.mark.parametrize("variant", ["full", "local"])
@pytest.mark.parametrize("causal", [True, False])
def test_low_rank_bias_equals_dense_u_vt(variant, causal):
    q, k, v, _, w_conv = inputs(seed=9)
    w_low, w = low_rank()
    y = run_kernel(variant, q, k, v, w_low, w_conv, causal)
    # U V^T is summed in float32 here and float64 for ``w``: entries ~3 differ by ~1e-7
    dense = run_kernel(variant, q, k, v, w, w_conv, causal)
    np.testing.assert_allclose(y, dense, rtol=1e-5, atol=1e-6)
    want = numpy_aft(q, k, v, biases(w, w_conv, causal)[variant], causal)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", ["full", "local"])
def test_low_rank_bias_in_the_chunked_forms(variant):
    q, k, v, _, _ = inputs(seed=10)
    w_low, w = low_rank(size=L)

    def chunks(bias):
        if variant == "full":
            zeros = jnp.zeros((B, L, D))
            state, chunk = (zeros, zeros), aft.aft_full_chunk
        else:
            state = aft.aft_window_init_state(B, WINDOW, D)
            chunk = lambda s, p, q, k, v, w: aft.aft_local_chunk(s, p, q, k, v, w, WINDOW)  # noqa: E731
        ys = []
        for start, stop in [(0, 3), (3, 4), (4, L)]:
            part = slice(start, stop)
            state, y = chunk(state, jnp.asarray(start), q[:, part], k[:, part], v[:, part], bias)
            ys.append(y)
        return jnp.concatenate(ys, axis=1)

    chunks = jax.jit(chunks)  # eager op-by-op dispatch is most of the time otherwise
    np.testing.assert_allclose(chunks(w_low), chunks(w), rtol=1e-5, atol=1e-6)
    want = run_kernel(variant, q, k, v, w, None, causal=True)
    np.testing.assert_allclose(chunks(w_low), want, rtol=1e-5, atol=1e-6)


def test_low_rank_bias_shape_errors():
    q, k, v, *_ = inputs()
    w_low, _ = low_rank(size=L - 1)
    with pytest.raises(ValueError, match="max_len"):
        aft.aft_full(q, k, v, w_low, causal=True)
