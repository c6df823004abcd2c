"""``arch.time_chunks``: logits and gradients chunk by chunk along time equal one call."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from arch.registry import names
from arch.time_chunks import RECOMPUTE, apply_in_time_chunks, check_recompute, check_time_chunk

VOCAB, LENGTH, CHUNK = 19, 24, 8


def _lm(name, **options):
    model = arch.build(name, vocab_size=VOCAB, d_model=16, n_layers=2, max_len=LENGTH, **options)
    tokens = jax.random.randint(jax.random.key(0), (2, LENGTH), 0, VOCAB)
    return model, model.init(jax.random.key(1), tokens), tokens


def _rel_err(got, want):
    return float(jnp.max(jnp.abs(got - want)) / (jnp.max(jnp.abs(want)) + 1e-6))


@pytest.mark.parametrize("name", names(bench=True))
def test_chunked_logits_and_gradients_equal_one_call(name):
    """Three chunks through the recurrent state give the parallel call's logits and the
    gradients of every parameter (S4 prefills by its recurrence, not the FFT: looser)."""
    model, variables, tokens = _lm(name)
    weights = jax.random.normal(jax.random.key(2), (2, LENGTH, VOCAB))

    def loss(v, chunked):
        if chunked:
            logits = apply_in_time_chunks(model, v, tokens, CHUNK)
        else:
            logits = model.apply(v, tokens)
        return jnp.sum(logits * weights), logits

    fn = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
    (_, want), grads_want = fn(variables, False)
    (_, got), grads_got = fn(variables, True)
    tol = 1e-3 if name == "s4" else 1e-4
    assert got.shape == want.shape == (2, LENGTH, VOCAB)
    assert _rel_err(got, want) < tol
    for g, w in zip(jax.tree.leaves(grads_got), jax.tree.leaves(grads_want), strict=True):
        assert _rel_err(g, w) < tol


@pytest.mark.parametrize("chunk", [CHUNK, 10])
def test_moe_statistics_are_averaged_over_the_chunks(chunk):
    """The mean of per-chunk expert fractions, weighted by the chunks' lengths (10 leaves
    a last chunk of 4), is the whole batch's."""
    model, variables, tokens = _lm("moe_mamba")
    collections = ["losses", "moe_stats"]
    want, sown_want = model.apply(variables, tokens, mutable=collections)
    got, sown_got = apply_in_time_chunks(model, variables, tokens, chunk, mutable=collections)
    np.testing.assert_allclose(got, want, atol=1e-5)
    stats_got, stats_want = sown_got["moe_stats"], sown_want["moe_stats"]
    assert jax.tree.structure(stats_got) == jax.tree.structure(stats_want)
    for g, w in zip(jax.tree.leaves(stats_got), jax.tree.leaves(stats_want), strict=True):
        np.testing.assert_allclose(g, w, atol=1e-6)
    # The losses are per chunk: their mean, one scalar per layer, as in the whole call.
    assert [x.shape for x in jax.tree.leaves(sown_got["losses"])] == [()] * 2


@pytest.mark.parametrize(
    "name, recompute",
    [("mamba", "dots"), ("rwkv6", "dots"), ("hawk", "dots")]
    + [(name, r) for name in ("hawk", "s5") for r in sorted(set(RECOMPUTE) - {"dots"})],
)
def test_a_ragged_last_chunk_gives_the_same_logits_and_gradients(name, recompute):
    """24 tokens in chunks of 10: two through the scan, then one prefill of 4. What a
    chunk saves for its backward (``recompute``) changes no number; "dots", the default,
    is checked for every architecture above, MoE-Mamba's policies against each other in
    the sown-losses test below."""
    model, variables, tokens = _lm(name)

    def loss(v, chunk):
        if chunk:
            logits = apply_in_time_chunks(model, v, tokens, chunk, recompute=recompute)
        else:
            logits = model.apply(v, tokens)
        return jnp.sum(jnp.tanh(logits))

    for got, want in zip(
        jax.tree.leaves(jax.value_and_grad(loss)(variables, 10)),
        jax.tree.leaves(jax.value_and_grad(loss)(variables, 0)),
        strict=True,
    ):
        assert _rel_err(got, want) < 1e-4


@pytest.mark.parametrize("name", names(bench=True))
def test_prefill_keeps_the_state_types_under_bfloat16(name):
    """The chunks' scan carries the state, so prefill must return init_state's dtypes
    (Mamba's, Mamba-2's and Hawk's conv state used to come back in bfloat16)."""
    model = arch.build(name, vocab_size=VOCAB, d_model=16, n_layers=2, max_len=LENGTH)
    tokens = jax.ShapeDtypeStruct((2, CHUNK), jnp.int32)
    variables = jax.eval_shape(model.init, jax.random.key(1), tokens)
    variables = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.bfloat16), variables)
    state = jax.eval_shape(lambda v: model.apply(v, 2, method="init_state"), variables)
    after, _ = jax.eval_shape(
        lambda v, s, t: model.apply(v, s, t, method="prefill"), variables, state, tokens
    )
    assert jax.tree.map(lambda x: x.dtype, after) == jax.tree.map(lambda x: x.dtype, state)


@pytest.mark.parametrize("name", ["mamba", "mamba2", "hawk", "rwkv"])
def test_bfloat16_parameters_give_the_one_call_logits(name):
    """Under bfloat16 parameters the chunked logits match one call's."""
    model, variables, tokens = _lm(name)
    variables = jax.tree.map(lambda x: x.astype(jnp.bfloat16), variables)
    got = apply_in_time_chunks(model, variables, tokens, CHUNK)
    want = model.apply(variables, tokens)
    assert got.dtype == want.dtype
    assert _rel_err(got.astype(jnp.float32), want.astype(jnp.float32)) < 5e-2


def test_a_sequence_within_one_chunk_returns_what_apply_returns():
    """Shorter than a chunk: logits alone, or (logits, sown) with ``mutable``."""
    model, variables, tokens = _lm("moe_mamba")
    logits = apply_in_time_chunks(model, variables, tokens, 2 * LENGTH)
    assert logits.shape == (2, LENGTH, VOCAB)
    logits, sown = apply_in_time_chunks(model, variables, tokens, 2 * LENGTH, mutable=["moe_stats"])
    assert logits.shape == (2, LENGTH, VOCAB) and set(sown) == {"moe_stats"}


@pytest.mark.parametrize("chunk", [0, -4, 2.0, True])
def test_bad_chunks_are_refused_with_the_fix(chunk):
    with pytest.raises(ValueError, match="must be a positive int"):
        check_time_chunk(chunk)


@pytest.mark.parametrize("recompute", ["dots", "all"])
def test_sown_losses_differentiate_through_recomputed_chunks(recompute):
    """MoE's load-balancing and z-losses, sown inside each checkpointed chunk (a ragged
    last one too), have the gradients they have without recomputation."""
    model, variables, tokens = _lm("moe_mamba")

    def loss(v, recompute):
        logits, sown = apply_in_time_chunks(
            model, v, tokens, 10, mutable=["losses", "moe_stats"], recompute=recompute
        )
        return jnp.sum(jnp.tanh(logits)) + sum(jnp.sum(x) for x in jax.tree.leaves(sown["losses"]))

    got = jax.grad(loss)(variables, recompute)
    want = jax.grad(loss)(variables, "none")
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert _rel_err(g, w) < 1e-5


def test_recomputing_a_chunk_keeps_less_for_the_backward():
    """Compiled gradients' temp memory: "dots" saves the matmul outputs only, "all" only
    the state entering each chunk, so each holds less than the last (Hawk, 512 tokens)."""
    length = 512
    model = arch.build("hawk", vocab_size=VOCAB, d_model=32, n_layers=2, max_len=length)
    tokens = jnp.zeros((2, length), jnp.int32)
    variables = jax.eval_shape(model.init, jax.random.key(0), tokens)

    def temp(recompute):
        def loss(v):
            return apply_in_time_chunks(model, v, tokens, 64, recompute=recompute).sum()

        compiled = jax.jit(jax.grad(loss)).lower(variables).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    none, dots, everything = temp("none"), temp("dots"), temp("all")
    assert dots < 0.6 * none
    assert everything < 0.6 * dots


def test_an_unknown_recompute_policy_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"recompute='some'.*\['all', 'dots', 'none'\]"):
        check_recompute("some")
