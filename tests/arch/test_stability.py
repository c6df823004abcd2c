"""Every architecture stays finite on long, extreme inputs (L = 4096, inputs of scale
100): a decay that underflows or a normaliser that overflows shows up here first."""

import jax
import numpy as np
import pytest

import arch

LENGTH = 4096
# O(L^2) parallel forms: about a minute each at L = 4096 on CI's two cores. Their
# numerics are a softmax (attention) or a max-stabilised exp-sum (AFT, checked with
# large keys at short lengths in tests/kernels/test_aft.py).
QUADRATIC = {"transformer", "aft_full", "aft_local", "aft_conv"}


# Their kernels have their own extreme-input tests (tests/kernels/test_wkv.py,
# test_selective_scan.py, test_s4_kernels.py); here they only run with RUN_SLOW=1, to
# keep the default suite within its time budget.
KERNEL_TESTED = {"rwkv", "s4", "s4d", "mamba", "aft_simple"}


def cases():
    out = []
    for name in sorted(arch.ARCHS):
        marks = []
        if name in QUADRATIC:
            marks = [pytest.mark.slow(reason="O(L^2) at L = 4096")]
        elif name in KERNEL_TESTED:
            marks = [pytest.mark.slow(reason="its kernel's extreme-input test runs by default")]
        out.append(pytest.param(name, marks=marks))
    return out


@pytest.mark.parametrize("name", cases())
def test_finite_at_4096_with_extreme_inputs(name):
    model = arch.build(
        name, d_input=3, d_model=8, n_layers=1, head="classify", n_classes=2, pooling="last",
        max_len=LENGTH,
    )  # fmt: skip
    x = 100.0 * jax.random.normal(jax.random.key(0), (1, LENGTH, 3))
    params = jax.jit(model.init)(jax.random.key(1), x)

    @jax.jit
    def loss_and_grad(params):
        return jax.value_and_grad(lambda p: model.apply(p, x).sum())(params)

    value, grads = loss_and_grad(params)
    assert np.isfinite(float(value)), name
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads)), name
