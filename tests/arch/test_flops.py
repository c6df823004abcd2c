"""The analytic model-FLOPs count (arch/flops.py) against XLA's own count.

``jax.jit(f).lower(...).cost_analysis()["flops"]`` counts every operation of the lowered
program (element-wise ones too, at one FLOP each), so it is an independent check of the
hand-written formulas, at shapes where the implementation does the model's work and
little else: width 256 (element-wise work is a few percent of the matmuls), length 16
(the masked half of causal attention and S4's once-per-batch kernel are small).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import arch
from arch.flops import TRAIN_MULTIPLIER, forward_flops_per_token, train_flops
from arch.mixers.attention import Attention
from arch.registry import names

D, LENGTH, BATCH, VOCAB = 256, 16, 32, 256  # batch 32: S4's per-batch kernel is small


def _lm(name, batch=BATCH, **options):
    model = arch.build(name, vocab_size=VOCAB, d_model=D, n_layers=2, max_len=LENGTH, **options)
    tokens = jax.ShapeDtypeStruct((batch, LENGTH), jnp.int32)
    params = jax.eval_shape(model.init, jax.random.key(0), tokens)
    return model, params, tokens


@pytest.mark.parametrize("name", names(bench=True))
def test_model_flops_match_xla_cost_analysis(name):
    # MoE with a capacity computes only the routed tokens (the exact form's sorted
    # dispatch pads each expert to whole blocks, which at 128 tokens is most of the work,
    # and dispatch="dense" runs every expert: work that is not model FLOPs).
    # Its dispatch and combine einsums grow with tokens squared: few tokens keep them small.
    options = (
        {"channel_options": {"capacity_factor": 1.0}, "batch": 8} if name == "moe_mamba" else {}
    )
    model, params, tokens = _lm(name, **options)
    batch = tokens.shape[0]
    ours = forward_flops_per_token(model, params, LENGTH)
    expected = ours["total"]
    if name == "s5":
        # XLA counts a complex multiply-add as 2 FLOPs, like a real one; B u and C x are
        # complex products in the implementation, 4 real FLOPs per element in our count.
        b_and_c = sum(
            2 * params["params"]["backbone"][f"blocks_{i}"]["mixer"][w].size
            for i in range(2)
            for w in ("B", "C")
        )
        expected -= b_and_c / 2
    xla = jax.jit(model.apply).lower(params, tokens).cost_analysis()["flops"] / batch / LENGTH
    assert ours["weights"] > 0 and ours["head"] == 2 * D * VOCAB
    assert xla == pytest.approx(expected, rel=0.10), (ours, xla)


def test_a_wrong_count_is_caught():
    """The tolerance above separates right from wrong: counting MoE's experts for every
    token, or missing S4's kernel parameters, is far outside it."""
    model, params, tokens = _lm("moe_mamba", batch=8, channel_options={"capacity_factor": 1.0})
    dense_uses = forward_flops_per_token(model, params, LENGTH)["total"]
    xla = jax.jit(model.apply).lower(params, tokens).cost_analysis()["flops"] / 8 / LENGTH
    all_experts = dense_uses + sum(
        2 * (1 - 2 / 8) * params["params"]["backbone"][f"blocks_{i}"]["channel_mixer"][w].size
        for i in range(2)
        for w in ("w1", "w2", "w3")
    )
    assert abs(all_experts / xla - 1) > 0.5


def test_attention_sequence_flops_match_xla():
    """Scores and values: 4 x width FLOPs per (query, key) pair, checked on the full
    (non-causal) square that the reference implementation computes."""
    length, batch, width = 512, 2, 128
    mixer = Attention(d_model=width, n_heads=2, causal=False, max_len=length, impl="reference")
    x = jax.ShapeDtypeStruct((batch, length, width), jnp.float32)
    params = jax.eval_shape(mixer.init, jax.random.key(0), x)
    weights = 2 * (width * 3 * width + width * width)
    expected = weights + mixer.sequence_flops(length)
    xla = jax.jit(mixer.apply).lower(params, x).cost_analysis()["flops"] / batch / length
    assert xla == pytest.approx(expected, rel=0.05)
    causal = Attention(d_model=width, n_heads=2, causal=True, max_len=length)
    assert causal.sequence_flops(length) == pytest.approx(
        mixer.sequence_flops(length) * (length + 1) / (2 * length)
    )


def test_mamba_recurrence_flops_match_the_decode_step():
    """The decode step runs the recurrence once per token, outside any loop (which XLA
    would count once), so its count checks Mamba's ``sequence_flops`` (5% of the total
    here: RWKV's and Hawk's terms are too small beside their weights for this check)."""
    model, params, _ = _lm("mamba")
    real = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
    state = model.apply(real, 1, method="init_state")
    step = jax.jit(lambda p, s, t: model.apply(p, s, t, method="step"))
    xla = step.lower(real, state, jnp.zeros((1,), jnp.int32)).cost_analysis()["flops"]
    ours = forward_flops_per_token(model, params, LENGTH)
    assert xla == pytest.approx(ours["total"], rel=0.05), ours
    without = ours["total"] - ours["sequence"]
    assert abs(xla - without) > 0.5 * ours["sequence"]  # the recurrence term is measured


def test_train_flops_is_three_forward_passes():
    model, params, _ = _lm("rwkv")
    per_token = forward_flops_per_token(model, params, LENGTH)["total"]
    assert TRAIN_MULTIPLIER == 3
    assert train_flops(model, params, 4, LENGTH) == pytest.approx(3 * per_token * 4 * LENGTH)


def test_a_bidirectional_classifier_counts_every_key_and_no_per_token_head():
    model = arch.build(
        "transformer", vocab_size=VOCAB, d_model=64, n_layers=2, max_len=LENGTH,
        head="classify", n_classes=3, bidirectional=True,
    )  # fmt: skip
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, LENGTH), jnp.int32))
    count = forward_flops_per_token(model, params, LENGTH)
    assert count["head"] == 0.0  # the classifier reads one pooled vector per sequence
    assert count["sequence"] == 2 * 4 * 64 * LENGTH  # two layers, all keys
