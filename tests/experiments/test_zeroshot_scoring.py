"""lm-eval's scoring rules, natively: the context/continuation split, log-likelihoods
against log-probabilities computed directly one request at a time, and acc/acc_norm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from experiments.tokenizer import ByteTokenizer, load_tokenizer
from experiments.zeroshot.scoring import (
    encode_pair,
    loglikelihood,
    loglikelihood_ids,
    multiple_choice,
)

MAX_LEN = 48


@pytest.fixture(scope="module")
def lm():
    model = arch.build("rwkv", vocab_size=256, d_model=16, n_layers=2, max_len=MAX_LEN)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
    # random, not init: every weight perturbed so the model prefers some bytes
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    leaves = [x + 0.5 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    return model, jax.tree.unflatten(tree, leaves)


def direct(model, params, context_ids, continuation_ids):
    """sum log p(continuation) from one unpadded forward pass, and the greedy check."""
    ids = (context_ids + continuation_ids)[-(MAX_LEN + 1) :]
    logp = jax.nn.log_softmax(model.apply(params, jnp.asarray([ids[:-1]])), -1)[0]
    n = len(continuation_ids)
    rows = logp[len(ids) - 1 - n :]
    target = jnp.asarray(continuation_ids)
    return float(rows[jnp.arange(n), target].sum()), bool(jnp.all(rows.argmax(-1) == target))


def test_trailing_spaces_of_the_context_move_to_the_continuation():
    tok = ByteTokenizer()
    assert encode_pair(tok, "Answer: ", "yes") == (list(b"Answer:"), list(b" yes"))
    assert encode_pair(tok, "Q:", " no") == (list(b"Q:"), list(b" no"))
    # lm-eval's context.rstrip(): newlines and tabs move too, not only spaces.
    assert encode_pair(tok, "Q:\n\t ", "no") == (list(b"Q:"), list(b"\n\t no"))
    with pytest.raises(ValueError, match="empty context.*has none"):
        encode_pair(tok, "", "x")
    with pytest.raises(ValueError, match="whitespace only"):
        encode_pair(tok, " \n", "x")
    with pytest.raises(ValueError, match="the continuation encodes to no tokens"):
        encode_pair(tok, "Q:", "")


def test_the_split_is_at_the_context_encoding_length_of_the_joint_encoding(tokenizer_json):
    """lm-eval encodes context + continuation once and splits at the length of the
    context's own encoding. Cut inside a merge ("q" | "uick", "qu" a merged token), the
    joint encoding's first tokens then cover "qu", and the continuation starts later."""
    tok = load_tokenizer(str(tokenizer_json))
    context, continuation = encode_pair(tok, "the q", "uick brown")
    whole = tok.encode("the quick brown")
    assert context + continuation == whole
    assert len(context) == len(tok.encode("the q"))
    assert continuation != tok.encode("uick brown")  # the merge crossed the boundary
    assert encode_pair(tok, "", "the")[0] == [tok.eos_id]  # empty context: end of text
    # ... unless the continuation starts with it: then that token is the context.
    eos = "<|endoftext|>"
    assert encode_pair(tok, "", eos + "the") == ([tok.eos_id], tok.encode("the"))


def test_loglikelihood_equals_direct_log_probabilities(lm):
    model, params = lm
    tok = ByteTokenizer()
    requests = [
        ("The cat sat on the", " mat"),
        ("Question: 2+2?\nAnswer: ", "4"),  # the space moves to the continuation
        ("x", " a much longer continuation"),
        ("a" * 60, " truncated"),  # longer than max_len: the context's start is cut
    ]
    got = loglikelihood(model, params, tok, requests, batch_size=3)  # mixed-length batches
    for (context, continuation), (ll, greedy) in zip(requests, got, strict=True):
        want_ll, want_greedy = direct(model, params, *encode_pair(tok, context, continuation))
        assert ll == pytest.approx(want_ll, rel=1e-5, abs=1e-4)
        assert greedy == want_greedy


def test_greedy_is_true_exactly_for_the_argmax_continuation(lm):
    model, params = lm
    context = list(b"Once upon a time")
    ids = list(context)
    for _ in range(3):  # greedy decoding, one forward pass per token
        ids.append(int(model.apply(params, jnp.asarray([ids]))[0, -1].argmax()))
    greedy = ids[len(context) :]
    other = greedy[:2] + [(greedy[2] + 1) % 256]  # the last token not the argmax
    (_, yes), (_, no) = loglikelihood_ids(model, params, [(context, greedy), (context, other)])
    assert yes and not no


def test_acc_and_acc_norm():
    # acc picks the larger log-likelihood; acc_norm divides by the characters first
    assert multiple_choice([-3.0, -4.0], ["a", "bbbbbb"], gold=1) == {"acc": 0.0, "acc_norm": 1.0}
    assert multiple_choice([-3.0, -4.0], ["a", "bb"], gold=0) == {"acc": 1.0, "acc_norm": 0.0}
    np.testing.assert_equal(multiple_choice([-1.0], ["z"], gold=0)["acc"], 1.0)
