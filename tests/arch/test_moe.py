"""The MoE channel mixer: parity with transformers' MixtralSparseMoeBlock (top-2, no
capacity drop) on random weights, GShard capacity and priority, the Switch and z losses
against their formulas, and the losses reaching the training loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from arch.moe import MoE, expert_positions
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
