"""Generation: greedy decoding equals the argmax of the parallel logits re-run on the
growing sequence (a recurrent model and the Transformer's KV cache), the sampling filters
against NumPy, reproducible sampling, stop ids and strings, and the max_len limit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from experiments.generate import context_limit, generate, generate_text, prefill_pieces
from experiments.sampling import Sampling, top_k_filter, top_p_filter

VOCAB, MAX_LEN = 40, 24


def _perturbed(model, seed=0):
    """Parameters with every weight perturbed, so that the argmax varies with the input."""
    params = jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, 8), jnp.int32))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    noisy = [x + 0.5 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    return jax.tree.unflatten(tree, noisy)


@functools.cache
def _lm(name):
    model = arch.build(name, vocab_size=VOCAB, d_model=16, n_layers=2, max_len=MAX_LEN)
    return model, _perturbed(model)


@pytest.fixture(scope="module", params=["mamba", "transformer"])
def lm(request):
    return (request.param, *_lm(request.param))


@pytest.fixture(scope="module")
def mamba():
    return _lm("mamba")  # the same objects as lm's: their compiled programs are reused


def parallel_greedy(model, params, prompts, n):
    """The argmax continuation from ``model.apply`` over the whole sequence each time.

    Right padding to a fixed width changes no causal logit before it, so one compiled
    forward pass serves every length."""
    apply = jax.jit(model.apply)
    seqs = [list(p) for p in prompts]
    for _ in range(n):
        width = len(seqs[0])
        tokens = np.zeros((len(seqs), MAX_LEN), np.int32)
        tokens[:, :width] = seqs
        logits = np.asarray(apply(params, jnp.asarray(tokens)))
        for seq, row in zip(seqs, logits[:, width - 1], strict=True):
            seq.append(int(row.argmax()))
    return [s[len(p) :] for s, p in zip(seqs, prompts, strict=True)]


PROMPTS = [[3, 1, 4, 1, 5, 9, 2, 6, 5], [2, 7, 1, 8, 2, 8, 1, 8, 2]]  # 9 = 8 + 1: two pieces
SHORT = [p[:8] for p in PROMPTS]  # one prefill piece: fewer programs to compile


def test_greedy_equals_the_argmax_of_the_parallel_logits(lm):
    _, model, params = lm
    gen = generate(model, params, PROMPTS, max_new_tokens=6)
    assert gen.tokens == parallel_greedy(model, params, PROMPTS, 6)
    assert gen.stop_reasons == ["max_new_tokens"] * 2
    assert gen.decode_steps == 5 and gen.tokens_per_s > 0 and gen.prefill_s > 0
    again = generate(model, params, PROMPTS, max_new_tokens=6)
    assert again.tokens == gen.tokens and again.compile_s == 0.0  # programs kept


def test_one_prefill_call_equals_prefill_in_pieces(mamba):
    model, params = mamba
    assert prefill_pieces(37) == [8] * 4 + [1] * 5 and prefill_pieces(8) == [8]
    assert prefill_pieces(1100) == [512, 512, 64, 8, 1, 1, 1, 1] and sum(prefill_pieces(300)) == 300
    whole = generate(model, params, PROMPTS, max_new_tokens=4, prefill_in_pieces=False)
    assert whole.tokens == generate(model, params, PROMPTS, max_new_tokens=4).tokens


def test_top_k_1_is_greedy_and_sampling_is_reproducible(mamba):
    model, params = mamba
    greedy = generate(model, params, SHORT, max_new_tokens=5).tokens
    top_1 = generate(model, params, SHORT, max_new_tokens=5, temperature=1.0, top_k=1).tokens
    assert top_1 == greedy
    sample = dict(max_new_tokens=12, temperature=1.5, top_p=0.99)
    first = generate(model, params, SHORT, seed=1, **sample).tokens
    assert generate(model, params, SHORT, seed=1, **sample).tokens == first
    assert generate(model, params, SHORT, seed=2, **sample).tokens != first
    # The key is (seed, position, row): a row alone samples what it sampled in the batch.
    assert generate(model, params, SHORT[:1], seed=1, **sample).tokens == first[:1]


def _numpy_top_k(logits, k):
    kth = np.sort(logits, axis=-1)[:, -k][:, None]
    return np.where(logits >= kth, logits, -np.inf)


def _numpy_top_p(logits, p):
    out = np.full_like(logits, -np.inf)
    for row, x in enumerate(logits):
        order = np.argsort(-x)
        probs = np.exp(x[order] - x.max())
        probs /= probs.sum()
        n = int(np.searchsorted(np.cumsum(probs), p) + 1)  # the smallest prefix with mass >= p
        out[row, order[:n]] = x[order[:n]]
    return out


@pytest.mark.parametrize("k", [1, 3, 10])
def test_top_k_filter_against_numpy(k):
    logits = np.random.default_rng(k).normal(size=(4, 10)).astype(np.float32)
    np.testing.assert_array_equal(
        np.asarray(top_k_filter(jnp.asarray(logits), k)), _numpy_top_k(logits, k)
    )


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9, 1.0])
def test_top_p_filter_against_numpy(p):
    logits = 2.0 * np.random.default_rng(7).normal(size=(5, 12)).astype(np.float32)
    got = np.asarray(top_p_filter(jnp.asarray(logits), p))
    np.testing.assert_array_equal(got, _numpy_top_p(logits, p))
    assert np.isfinite(got.max(-1)).all()  # the most likely token always survives


def test_sampling_options_are_checked():
    for bad in (dict(temperature=-1.0), dict(top_k=0), dict(top_p=0.0), dict(top_p=1.5)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Sampling(**bad)
    with pytest.raises(ValueError, match="seed=4294967296 must fit in 32 bits"):
        generate(*_lm("mamba"), SHORT, max_new_tokens=1, seed=2**32)


def test_ids_past_the_tokenizers_vocabulary_are_never_generated(mamba):
    """A padded embedding (Mamba's 50,280 rows for 50,277 tokens) has ids no tokenizer
    decodes: with n_ids they are never chosen, greedy or sampled."""
    model, params = mamba
    free = generate(model, params, SHORT, max_new_tokens=12, temperature=2.0, seed=3).tokens
    assert max(max(row) for row in free) >= 8  # without the limit, higher ids do come
    for options in (dict(), dict(temperature=2.0, seed=3)):
        rows = generate(model, params, SHORT, max_new_tokens=12, n_ids=8, **options).tokens
        assert max(max(row) for row in rows) < 8


def test_a_stop_id_ends_the_row_without_being_kept(mamba):
    model, params = mamba
    greedy = generate(model, params, PROMPTS, max_new_tokens=6).tokens
    stop = greedy[0][3]
    gen = generate(model, params, PROMPTS, max_new_tokens=6, stop_ids=[stop])
    for row, reason in zip(greedy, gen.stop_reasons, strict=True):  # rows stop on their own
        assert reason == ("stop_id" if stop in row else "max_new_tokens")
    assert gen.tokens == [r[: r.index(stop)] if stop in r else r for r in greedy]


class Letters:
    """A tokenizer of one letter per id (ids beyond 26 decode as '#')."""

    name, vocab_size, eos_id = "letters", VOCAB, None

    def encode(self, text):
        return [ord(c) - ord("a") for c in text]

    def decode(self, ids):
        return "".join(chr(ord("a") + i) if i < 26 else "#" for i in ids)


def test_generate_text_stops_before_a_stop_string_and_streams_the_rest(mamba):
    model, params = mamba
    tok = Letters()
    full, stats = generate_text(model, params, tok, "hello", max_new_tokens=8)
    assert stats["new_tokens"] == 8 and stats["stop_reason"] == "max_new_tokens"
    stop = full[3:5]
    pieces = []
    text, stats = generate_text(
        model, params, tok, "hello", max_new_tokens=8, stop_strings=[stop], stream=pieces.append
    )
    assert text == full[: full.index(stop)] and stats["stop_reason"] == "stop_string"
    assert "".join(pieces) == text


def test_the_transformer_stops_at_max_len(lm):
    name, model, params = lm
    if name != "transformer":
        assert context_limit(model) is None  # a recurrent state has no length limit
        return
    assert context_limit(model) == MAX_LEN
    prompt = list(range(MAX_LEN - 2))
    gen = generate(model, params, [prompt], max_new_tokens=10)
    # MAX_LEN - 2 prompt tokens, 2 more fed back, and the last one never fed: 3 new tokens.
    assert len(gen.tokens[0]) == 3 and gen.stop_reasons == ["max_len"]
    assert gen.tokens == parallel_greedy(model, params, [prompt], 3)
    with pytest.raises(ValueError, match=f"more than max_len={MAX_LEN}"):
        generate(model, params, [list(range(MAX_LEN + 1))], max_new_tokens=1)
    text, _ = generate_text(
        model, params, Letters(), "ab" * MAX_LEN, max_new_tokens=4, truncate_prompt=True
    )
    assert len(text) == 4  # the prompt's last MAX_LEN - 3 tokens kept: 4 new ones fit


def test_s4_is_not_limited_by_its_kernel_length():
    model = arch.build("s4", vocab_size=VOCAB, d_model=8, n_layers=1, max_len=16)
    assert context_limit(model) is None


def test_bad_prompts_are_refused_with_a_sentence(mamba):
    model, params = mamba
    with pytest.raises(ValueError, match="one length"):
        generate(model, params, [[1, 2], [1, 2, 3]], max_new_tokens=1)
    with pytest.raises(ValueError, match=r"ids must be in \[0, 40\)"):
        generate(model, params, [[1, VOCAB]], max_new_tokens=1)
    with pytest.raises(ValueError, match="empty prompt"):
        generate_text(model, params, Letters(), "", max_new_tokens=1)
