"""The MoE channel mixer: parity with transformers' MixtralSparseMoeBlock (top-2, no
capacity drop) on random weights, GShard capacity and priority, the Switch and z losses
against their formulas, and the losses reaching the training loop. The sorted (MegaBlocks)
dispatch: its layout on a hand-worked case, outputs and gradients equal to the dense
(every expert on every token) form under skewed routings, a NumPy loop over tokens, and
XLA's FLOP count showing it does not run every expert."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from arch.moe import MoE, auto_block_size, expert_positions, max_blocks, sorted_layout
from experiments import models

D, E, HIDDEN = 8, 4, 12


def test_parity_with_transformers_mixtral_sparse_moe_block():
    torch = pytest.importorskip("torch", reason="torch is a dev requirement (parity tests)")
    transformers = pytest.importorskip("transformers", reason="transformers is a dev requirement")
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    cfg = transformers.MixtralConfig(
        hidden_size=D, intermediate_size=HIDDEN, num_local_experts=E, num_experts_per_tok=2
    )
    torch.manual_seed(0)
    block = MixtralSparseMoeBlock(cfg).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    t = lambda p: jnp.asarray(p.detach().numpy())  # noqa: E731
    gate_up, down = t(block.experts.gate_up_proj), t(block.experts.down_proj)
    params = {
        "router": {"kernel": t(block.gate.weight).T},
        "w1": jnp.swapaxes(gate_up[:, :HIDDEN], 1, 2),
        "w3": jnp.swapaxes(gate_up[:, HIDDEN:], 1, 2),
        "w2": jnp.swapaxes(down, 1, 2),
    }
    x = np.random.default_rng(0).normal(size=(2, 5, D)).astype(np.float32)
    with torch.no_grad():
        expected = block(torch.from_numpy(x)).numpy()
    ours = MoE(D, n_experts=E, top_k=2, hidden=HIDDEN).apply({"params": params}, jnp.asarray(x))
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)


def test_capacity_keeps_first_choices_first_and_drops_the_rest():
    # Three tokens all choose expert 0 first; expert 1 second.
    choice = jnp.array([[0, 1], [0, 1], [0, 1]])
    onehot, slot = expert_positions(choice, 3)
    np.testing.assert_array_equal(slot, [[0, 0], [1, 1], [2, 2]])
    assert onehot.shape == (3, 2, 3)
    layer = MoE(D, n_experts=E, top_k=1, capacity_factor=1.0, hidden=HIDDEN)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 16, D)), jnp.float32)
    variables = layer.init(jax.random.key(0), x)
    y, sown = layer.apply(variables, x, mutable=["moe_stats"])
    exact = MoE(D, n_experts=E, top_k=1, hidden=HIDDEN).apply(variables, x)
    dropped = float(sown["moe_stats"]["dropped"][0])
    # Capacity 4 slots per expert for 16 tokens: a token either keeps its exact output or
    # (its expert full) gets nothing from the layer.
    same = np.isclose(np.asarray(y), np.asarray(exact), atol=1e-6).all(-1)[0]
    zero = np.isclose(np.asarray(y), 0.0, atol=1e-7).all(-1)[0]
    assert (same | zero).all()
    np.testing.assert_allclose(zero.mean(), dropped, atol=1e-6)


def test_losses_are_switch_balance_and_router_z():
    layer = MoE(D, n_experts=E, top_k=2, hidden=HIDDEN, balance_coef=1.0, z_loss_coef=0.0)
    x = jnp.asarray(np.random.default_rng(2).normal(size=(3, 7, D)), jnp.float32)
    variables = layer.init(jax.random.key(0), x)
    _, sown = layer.apply(variables, x, mutable=["losses"])
    logits = np.asarray(x.reshape(-1, D) @ variables["params"]["router"]["kernel"], np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    top2 = np.argsort(-probs, axis=-1)[:, :2]
    f = np.bincount(top2.ravel(), minlength=E) / top2.size
    expected = E * np.sum(f * probs.mean(0))  # Switch eq. 4 (over routed assignments)
    np.testing.assert_allclose(sown["losses"]["moe"][0], expected, rtol=1e-5)
    z_only = MoE(D, n_experts=E, top_k=2, hidden=HIDDEN, balance_coef=0.0, z_loss_coef=1.0)
    _, sown = z_only.apply(variables, x, mutable=["losses"])
    lse = np.log(np.exp(logits).sum(-1))
    np.testing.assert_allclose(sown["losses"]["moe"][0], np.mean(lse**2), rtol=1e-5)


def test_the_loop_adds_the_losses_and_any_mixer_takes_moe():
    model = arch.build("s4d", vocab_size=11, d_model=D, n_layers=2, channel="moe",
                       channel_options={"n_experts": E, "hidden": HIDDEN})  # fmt: skip
    batch = {"inputs": jnp.ones((2, 5), jnp.int32), "targets": jnp.ones((2, 5), jnp.int32)}
    params = models.init_params(model, batch, jax.random.key(0))
    assert "losses" not in params
    logits, aux, stats = models.apply_with_aux(model, params, batch)
    assert logits.shape == (2, 5, 11) and float(aux) > 0
    assert len(jax.tree.leaves(stats)) == 4  # fraction and dropped, two layers
    plain = arch.build("s4d", vocab_size=11, d_model=D, n_layers=2)
    p2 = models.init_params(plain, batch, jax.random.key(0))
    assert float(models.apply_with_aux(plain, p2, batch)[1]) == 0.0


def test_bad_options():
    with pytest.raises(ValueError, match="top_k <= n_experts"):
        MoE(D, n_experts=2, top_k=3)
    with pytest.raises(ValueError, match="capacity_factor must be > 0"):
        MoE(D, capacity_factor=0.0)
    with pytest.raises(ValueError, match="unknown dispatch 'sparse'; valid: sorted, dense"):
        MoE(D, dispatch="sparse")
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        MoE(D, block_size=0)


def test_sorted_layout_on_a_worked_example():
    # Tokens 0, 2, 3 choose expert 1, token 1 expert 0, nobody expert 2; blocks of 2 rows:
    # expert 0 gets block 0 (token 1 + padding), expert 1 blocks 1-2 (tokens 0, 2 | 3 + pad).
    choice = jnp.array([[1], [0], [1], [1]])
    row_token, position, block_expert = sorted_layout(choice, 3, 2)
    np.testing.assert_array_equal(row_token, [1, 4, 0, 2, 3, 4])  # 4: the padding row
    np.testing.assert_array_equal(position, [2, 0, 3, 4])
    np.testing.assert_array_equal(block_expert, [0, 1, 1])
    # top-2, token-major assignments (0: e0, e2), (1: e2, e0). The static bound allows 3
    # blocks (counts 1, 1, 2 would need them); the unused one is padding for expert E-1.
    row_token, position, block_expert = sorted_layout(jnp.array([[0, 2], [2, 0]]), 3, 2)
    np.testing.assert_array_equal(row_token, [0, 1, 0, 1, 2, 2])
    np.testing.assert_array_equal(position, [0, 2, 3, 1])
    np.testing.assert_array_equal(block_expert, [0, 2, 2])


def test_block_size_rule_and_block_bound():
    assert auto_block_size(16384, 8) == 512  # 16384 / 32 = 512
    assert auto_block_size(1024, 8) == 32
    # Nearest in log2: the boundary between 64 and 128 is sqrt(64 * 128) ~ 90.5.
    assert auto_block_size(2800, 8) == 64 and auto_block_size(3000, 8) == 128  # 87.5, 93.75
    assert auto_block_size(10, 4) == 8 and auto_block_size(1, 8) == 8  # clamped below
    assert auto_block_size(10**7, 8) == 512  # clamped above
    rng = np.random.default_rng(0)
    for _ in range(200):  # the static bound holds for every split of the assignments
        e, bs, n = int(rng.integers(1, 9)), int(rng.integers(1, 9)), int(rng.integers(1, 60))
        counts = np.bincount(rng.integers(0, e, n) if rng.random() < 0.7 else np.zeros(n, int),
                             minlength=e)  # fmt: skip
        assert np.sum(-(-counts // bs)) <= max_blocks(n, e, bs)
    assert max_blocks(16, 4, 4) == 7 and max_blocks(1, 8, 8) == 1


def _routed_variables(layer, x, routing):
    """Parameters with a forced routing: "random"; "skip_last" (expert E-1 never chosen);
    "all_first" (every token's first choice is expert 0, its second expert 1)."""
    variables = layer.init(jax.random.key(0), x)
    params = jax.tree.map(lambda p: p * 20.0, variables["params"])  # sharper routing
    kernel = params["router"]["kernel"]
    if routing == "skip_last":
        kernel = kernel.at[0, E - 1].set(-50.0)  # feature 0 of x is >= 1 (below)
    elif routing == "all_first":
        kernel = kernel.at[0, 0].set(50.0).at[0, 1].set(25.0)
    params["router"]["kernel"] = kernel
    return {"params": params}


def _choices(variables, x, top_k):
    logits = x.reshape(-1, D) @ variables["params"]["router"]["kernel"]
    return np.asarray(jax.lax.top_k(logits, top_k)[1])


@pytest.mark.parametrize("routing", ["random", "skip_last", "all_first"])
@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("shape", [(1, 1), (2, 5), (3, 11), (2, 8)])
def test_sorted_dispatch_equals_dense_outputs_and_gradients(shape, top_k, routing):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(*shape, D)).astype(np.float32)
    x[..., 0] = 1.0 + np.abs(x[..., 0])  # a positive feature that the routing keys on
    x = jnp.asarray(x)
    sorted_, dense = (
        MoE(D, n_experts=E, top_k=top_k, hidden=HIDDEN, dispatch=d) for d in ("sorted", "dense")
    )
    variables = _routed_variables(dense, x, routing)
    counts = np.bincount(_choices(variables, x, top_k).ravel(), minlength=E)
    if routing == "skip_last":
        assert counts[E - 1] == 0
    if routing == "all_first":
        assert counts[0] == x.shape[0] * x.shape[1] and counts[2:].sum() == 0
    # T * k tokens in blocks of 8: 1, 10, 33, 16 (top-1) and 2, 20, 66, 32 (top-2) rows.
    cotangent = jnp.asarray(rng.normal(size=x.shape), jnp.float32)

    def loss(layer, variables, x):
        y, sown = layer.apply(variables, x, mutable=["losses", "moe_stats"])
        return jnp.sum(y * cotangent) + sown["losses"]["moe"][0], (y, sown)

    grad = jax.jit(jax.value_and_grad(loss, argnums=(1, 2), has_aux=True), static_argnums=0)
    (_, (y_s, sown_s)), g_s = grad(sorted_, variables, x)
    (_, (y_d, sown_d)), g_d = grad(dense, variables, x)
    assert float(jnp.abs(y_d).max()) > 1e-3  # the comparison is not between zeros
    np.testing.assert_allclose(y_s, y_d, rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), sown_s, sown_d)
    flat_s, flat_d = jax.tree.leaves_with_path(g_s), jax.tree.leaves(g_d)
    assert len(flat_s) == len(flat_d) == 5  # x, router, w1, w2, w3
    for (path, a), b in zip(flat_s, flat_d, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("block_size", [1, 3, 64])
def test_sorted_dispatch_any_block_size(block_size):
    x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 9, D)), jnp.float32)
    dense = MoE(D, n_experts=E, top_k=2, hidden=HIDDEN, dispatch="dense")
    variables = dense.init(jax.random.key(1), x)
    ours = MoE(D, n_experts=E, top_k=2, hidden=HIDDEN, block_size=block_size)
    np.testing.assert_allclose(
        ours.apply(variables, x), dense.apply(variables, x), rtol=1e-5, atol=1e-6
    )


def _numpy_moe(params, x, top_k):
    """The exact MoE, one token at a time, in float64."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    out = np.zeros_like(x, dtype=np.float64)
    for t, token in enumerate(np.asarray(x, np.float64)):
        logits = token @ p["router"]["kernel"]
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        chosen = np.argsort(-probs, kind="stable")[:top_k]
        gates = probs[chosen] / (probs[chosen].sum() if top_k > 1 else 1.0)
        for e, g in zip(chosen, gates, strict=True):
            a = token @ p["w1"][e]
            hidden = a / (1.0 + np.exp(-a)) * (token @ p["w3"][e])
            out[t] += g * (hidden @ p["w2"][e])
    return out


@pytest.mark.parametrize("dispatch", ["sorted", "dense"])
@pytest.mark.parametrize("top_k", [1, 2])
def test_exact_moe_matches_a_numpy_loop_over_tokens(top_k, dispatch):
    x = jnp.asarray(np.random.default_rng(5).normal(size=(1, 13, D)), jnp.float32)
    layer = MoE(D, n_experts=E, top_k=top_k, hidden=HIDDEN, dispatch=dispatch)
    params = jax.tree.map(lambda p: p * 30.0, layer.init(jax.random.key(2), x)["params"])
    y = layer.apply({"params": params}, x)[0]
    expected = _numpy_moe(params, x[0], top_k)
    assert np.abs(expected).max() > 1e-2
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_sorted_dispatch_does_not_compute_every_expert():
    tokens, d, hidden, e = 1024, 32, 64, 8
    x = jax.ShapeDtypeStruct((1, tokens, d), jnp.float32)

    def flops(dispatch):
        layer = MoE(d, n_experts=e, top_k=1, hidden=hidden, dispatch=dispatch)
        params = jax.eval_shape(layer.init, jax.random.key(0), x)

        def step(params, x):
            return jax.grad(lambda p: jnp.sum(layer.apply(p, x) ** 2))(params)

        fwd = jax.jit(layer.apply).lower(params, x).compile().cost_analysis()["flops"]
        train = jax.jit(step).lower(params, x).compile().cost_analysis()["flops"]
        return fwd, train

    (fwd_sorted, train_sorted), (fwd_dense, train_dense) = flops("sorted"), flops("dense")
    # Expert matmuls: 3 x 2 d hidden per row; dense runs 8 x 1024 rows, sorted at most
    # 1024 + 8 x 31 (block 32): 0.15 of dense, plus the router and the routing itself.
    expert_dense = 3 * 2 * d * hidden * e * tokens
    assert fwd_dense > expert_dense
    assert fwd_sorted < 0.35 * fwd_dense, (fwd_sorted, fwd_dense)
    assert train_sorted < 0.35 * train_dense, (train_sorted, train_dense)
