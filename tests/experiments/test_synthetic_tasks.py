"""Synthetic tasks: layout, determinism, and each task's answer re-derived from its inputs."""

from __future__ import annotations

import re

import numpy as np
import pytest

from experiments.tasks import mqar as mqar_lib
from experiments.tasks import passkey as passkey_lib
from experiments.tasks.registry import TASKS, make_task

SMALL = {
    "mqar": dict(vocab_size=64, seq_len=64, num_kv_pairs=8),
    "selective_copy": dict(vocab_size=8, seq_len=48, n_tokens=6),
    "induction_heads": dict(vocab_size=8, seq_len=32),
    "passkey": dict(seq_len=160),
}
KEY_RE = re.compile(rb"The pass key is (\d+)\. Remember it\. (\d+) is the pass key\. ")


def as_text(tokens: np.ndarray) -> bytes:
    return bytes(tokens.astype(np.uint8).tolist())


# ------------------------------------------------------------------ common to all tasks


def test_registry_has_the_four_tasks():
    assert set(SMALL) <= set(TASKS)  # the LRA tasks are registered beside them
    for name in SMALL:  # the defaults are valid and give full-length batches
        task = make_task(name)
        assert task.batch("train", 0, 2, 0)["inputs"].shape == (2, task.spec.seq_len)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_layout(name):
    task = make_task(name, **SMALL[name])
    spec = task.spec
    assert (spec.name, spec.kind, spec.seq_len) == (name, "lm", SMALL[name]["seq_len"])
    batch = task.batch("train", 3, 5, 0)
    assert set(batch) == {"inputs", "targets", "loss_mask"}
    for key, dtype in (("inputs", np.int32), ("targets", np.int32), ("loss_mask", np.float32)):
        assert batch[key].shape == (5, spec.seq_len)
        assert batch[key].dtype == dtype
    for key in ("inputs", "targets"):
        assert 0 <= batch[key].min() and batch[key].max() < spec.vocab_size
    assert set(np.unique(batch["loss_mask"])) == {0.0, 1.0}
    assert task.eval_steps("val", 5) == 8
    assert make_task(name, **SMALL[name], n_eval_steps=3).eval_steps("test", 5) == 3
    with pytest.raises(ValueError, match="unknown split"):
        task.batch("dev", 0, 5, 0)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_batches_are_a_pure_function_of_their_arguments(name):
    task = make_task(name, **SMALL[name])
    reference = task.batch("train", 7, 4, 1)
    again = make_task(name, **SMALL[name]).batch("train", 7, 4, 1)
    for key in reference:
        np.testing.assert_array_equal(reference[key], again[key])
    for other in (
        task.batch("train", 8, 4, 1),
        task.batch("val", 7, 4, 1),
        task.batch("test", 7, 4, 1),
        task.batch("train", 7, 4, 2),
    ):
        assert not np.array_equal(reference["inputs"], other["inputs"])
    assert not np.array_equal(
        task.batch("val", 0, 4, 1)["inputs"], task.batch("test", 0, 4, 1)["inputs"]
    )


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown task 'mqr'; valid:.*mqar.*passkey"):
        make_task("mqr")
    with pytest.raises(ValueError, match="'num_pairs' for task 'mqar'.*num_kv_pairs"):
        make_task("mqar", num_pairs=4)


@pytest.mark.parametrize(
    "name, options, match",
    [
        ("mqar", dict(seq_len=30, num_kv_pairs=8), "seq_len >= 32"),
        ("mqar", dict(vocab_size=16, num_kv_pairs=8), "vocab_size >= 18"),
        ("mqar", dict(power_a=0.0), "power_a"),
        ("selective_copy", dict(seq_len=10, n_tokens=6), "seq_len >= 12"),
        ("induction_heads", dict(seq_len=2), "seq_len >= 3"),
        ("passkey", dict(seq_len=50), r"seq_len >= \d+"),
        ("passkey", dict(depth=1.5), "depth"),
    ],
)
def test_bad_options_say_how_to_fix_them(name, options, match):
    with pytest.raises(ValueError, match=match):
        make_task(name, **options)


# ---------------------------------------------------------------------------------- MQAR


@pytest.mark.parametrize(
    "vocab_size, seq_len, num_kv_pairs, random_non_queries",
    [(64, 64, 8, True), (64, 64, 16, False), (8192, 128, 12, True), (20, 36, 9, True)],
)
def test_mqar_targets_are_the_paired_values(vocab_size, seq_len, num_kv_pairs, random_non_queries):
    task = make_task(
        "mqar",
        vocab_size=vocab_size,
        seq_len=seq_len,
        num_kv_pairs=num_kv_pairs,
        random_non_queries=random_non_queries,
    )
    batch = task.batch("train", 0, 16, 0)
    context, half = 2 * num_kv_pairs, vocab_size // 2
    for inputs, targets, mask in zip(
        batch["inputs"], batch["targets"], batch["loss_mask"], strict=True
    ):
        keys, values = inputs[0:context:2], inputs[1:context:2]
        assert len(set(keys.tolist())) == num_kv_pairs
        assert len(set(values.tolist())) == num_kv_pairs
        assert np.all((keys >= 1) & (keys < half))
        assert np.all((values >= half) & (values < vocab_size))
        scored = np.flatnonzero(mask)
        assert np.all(scored >= context) and np.all((scored - context) % 2 == 0)
        # Each key is queried exactly once, after the kv pairs.
        assert sorted(inputs[scored].tolist()) == sorted(keys.tolist())
        for t in scored:
            first = int(np.flatnonzero(inputs == inputs[t])[0])  # the key's own kv slot
            assert first < context and first % 2 == 0
            assert targets[t] == inputs[first + 1]
        assert np.all(targets[mask == 0] == 0)
        if not random_non_queries:
            unscored_query_region = np.setdiff1d(np.arange(context, seq_len), scored)
            assert np.all(inputs[unscored_query_region] == 0)


def test_mqar_query_gaps_follow_the_power_law():
    seq_len, n, rows = 256, 4, 256
    space = (seq_len - 2 * n) // 2

    def slots(power_a):
        task = make_task("mqar", vocab_size=64, seq_len=seq_len, num_kv_pairs=n, power_a=power_a)
        mask = task.batch("train", 0, rows, 0)["loss_mask"]
        return (np.nonzero(mask)[1] - 2 * n) // 2

    # Reference: Zoology's law drawn one gap at a time, p(gap) ~ power_a * gap**(power_a - 1).
    gap = np.arange(1, space + 1)
    p = 0.01 * gap ** (0.01 - 1)
    rng = np.random.default_rng(0)
    reference = np.concatenate(
        [rng.choice(space, size=n, replace=False, p=p / p.sum()) for _ in range(rows)]
    )
    skewed, uniform = slots(0.01), slots(1.0)
    # Tolerances: about 3.5 standard errors of the difference of two 1024-gap samples.
    for statistic, tolerance in ((lambda s: np.mean(s < space // 10), 0.08), (np.mean, 5.0)):
        assert abs(statistic(skewed) - statistic(reference)) < tolerance
    assert np.mean(skewed < space // 10) > 0.4  # skewed to short gaps ...
    assert np.mean(skewed) < 0.3 * space
    assert abs(np.mean(uniform) - (space - 1) / 2) < 0.05 * space  # ... unlike power_a = 1


def test_weighted_sampling_matches_the_weights():
    # Gumbel top-k's first draw is a categorical sample with probabilities p.
    p = np.arange(1, 9, dtype=np.float64) ** -0.99
    p /= p.sum()
    rng = np.random.default_rng(0)
    rows = 20000
    first = mqar_lib.weighted_without_replacement(rng, np.log(p), rows, 3)
    assert all(len(set(row)) == 3 for row in first.tolist())
    frequency = np.bincount(first[:, 0], minlength=8) / rows
    np.testing.assert_allclose(frequency, p, atol=4 * np.sqrt(p.max() / rows))


@pytest.mark.parametrize("pool, k", [(100, 5), (10, 4)])  # redraw path, partition path
def test_uniform_sampling_is_distinct_and_uniform(pool, k):
    rng = np.random.default_rng(0)
    rows = 4000
    sample = mqar_lib.uniform_without_replacement(rng, pool, rows, k)
    assert sample.shape == (rows, k) and sample.min() >= 0 and sample.max() < pool
    assert np.all(np.diff(np.sort(sample, axis=1), axis=1) > 0)
    for column in (0, k - 1):  # every position, not just the set, is uniform
        frequency = np.bincount(sample[:, column], minlength=pool) / rows
        np.testing.assert_allclose(frequency, 1 / pool, atol=5 * np.sqrt(1 / pool / rows))


# ------------------------------------------------------------------- selective copying


def test_selective_copy_answer_is_the_data_tokens_in_order():
    options = SMALL["selective_copy"]
    task = make_task("selective_copy", **options)
    n, blank, marker = options["n_tokens"], options["vocab_size"], options["vocab_size"] + 1
    assert task.spec.vocab_size == options["vocab_size"] + 2
    batch = task.batch("train", 0, 32, 0)
    for inputs, targets, mask in zip(
        batch["inputs"], batch["targets"], batch["loss_mask"], strict=True
    ):
        context = inputs[:-n]
        memorised = context[context != blank]
        assert len(memorised) == n and np.all(memorised < blank)
        assert np.all(inputs[-n:] == marker)
        np.testing.assert_array_equal(np.flatnonzero(mask), np.arange(len(inputs) - n, len(inputs)))
        np.testing.assert_array_equal(targets[mask == 1], memorised)
    # The data tokens move around: positions differ between examples.
    positions = [tuple(np.flatnonzero(row[:-n] != blank)) for row in batch["inputs"]]
    assert len(set(positions)) > 1


# ---------------------------------------------------------------------- induction heads


def test_induction_target_follows_the_first_trigger():
    options = SMALL["induction_heads"]
    task = make_task("induction_heads", **options)
    trigger = options["vocab_size"]
    assert task.spec.vocab_size == trigger + 1
    batch = task.batch("train", 0, 64, 0)
    first_positions = []
    for inputs, targets, mask in zip(
        batch["inputs"], batch["targets"], batch["loss_mask"], strict=True
    ):
        triggers = np.flatnonzero(inputs == trigger)
        assert len(triggers) == 2 and triggers[1] == len(inputs) - 1
        first = triggers[0]
        assert first + 1 < len(inputs) - 1  # the target is a data token, not the last trigger
        np.testing.assert_array_equal(np.flatnonzero(mask), [len(inputs) - 1])
        assert targets[-1] == inputs[first + 1] and targets[-1] < trigger
        first_positions.append(first)
    assert len(set(first_positions)) > 10


# ----------------------------------------------------------------------------- passkey


def test_passkey_digits_spell_the_key_in_the_text():
    task = make_task("passkey", seq_len=200, n_digits=5)
    batch = task.batch("train", 0, 16, 0)
    keys = set()
    for inputs, targets, mask in zip(
        batch["inputs"], batch["targets"], batch["loss_mask"], strict=True
    ):
        text = as_text(np.append(inputs, targets[-1]))
        found = KEY_RE.findall(text)
        assert len(found) == 1 and found[0][0] == found[0][1] and len(found[0][0]) == 5
        key = found[0][0]
        assert as_text(targets[mask == 1]) == key
        assert text.endswith(b"What is the pass key? The pass key is " + key)
        np.testing.assert_array_equal(targets[:-1], inputs[1:])  # next-byte targets
        keys.add(key)
    assert len(keys) > 1


@pytest.mark.parametrize("depth", [0.0, 0.3, 0.5, 1.0])
def test_passkey_depth_places_the_key_where_asked(depth):
    task = make_task("passkey", seq_len=400, depth=depth)
    batch = task.batch("val", 0, 4, 0)
    longest_sentence = max(len(s) + 1 for s in passkey_lib.FILLER.split(". "))
    for inputs, targets in zip(batch["inputs"], batch["targets"], strict=True):
        text = as_text(np.append(inputs, targets[-1]))
        match = KEY_RE.search(text)
        question = text.index(b"What is the pass key?")
        filler = text[: match.start()] + text[match.end() : question]
        assert filler in (passkey_lib.FILLER * 20).encode()  # the rest is untouched filler
        assert filler.endswith(b"again. ")
        assert abs(match.start() / len(filler) - depth) <= longest_sentence / len(filler)


def test_passkey_random_depth_varies_per_example():
    batch = make_task("passkey", seq_len=400).batch("train", 0, 32, 0)
    starts = [KEY_RE.search(as_text(row)).start() for row in batch["inputs"]]
    assert max(starts) - min(starts) > 150


def read_key_from_text(inputs: np.ndarray, n_digits: int) -> np.ndarray:
    """A perfect predictor: it reads the key where the text states it."""
    keys = [KEY_RE.search(as_text(row)).group(1) for row in inputs]
    return np.array([list(key) for key in keys], dtype=np.int32).reshape(len(inputs), n_digits)


def test_passkey_grid_with_perfect_and_random_predictors():
    lengths, depths = (120, 160), (0.0, 0.5, 1.0)
    perfect = passkey_lib.passkey_accuracy_grid(
        lambda x: read_key_from_text(x, 3), lengths, depths, 40, 0, n_digits=3, batch_size=16
    )
    assert set(perfect) == {(length, depth) for length in lengths for depth in depths}
    assert all(value == 1.0 for value in perfect.values())

    rng = np.random.default_rng(1)

    def guess(inputs, n_digits):
        return ord("0") + rng.integers(0, 10, size=(len(inputs), n_digits))

    for n_digits, expected, tolerance in ((1, 0.1, 0.03), (2, 0.01, 0.01)):
        grid = passkey_lib.passkey_accuracy_grid(
            lambda x, n=n_digits: guess(x, n), (120,), (0.5,), 2000, 0, n_digits=n_digits
        )
        assert abs(grid[(120, 0.5)] - expected) < tolerance

    with pytest.raises(ValueError, match="expected"):
        passkey_lib.passkey_accuracy_grid(lambda x: x[:, :2], (120,), (0.5,), 4, 0, n_digits=3)


def test_plot_passkey_grid_writes_a_png(tmp_path):
    grid = {(length, depth): depth for length in (128, 256) for depth in (0.0, 0.5, 1.0)}
    path = tmp_path / "grid.png"
    passkey_lib.plot_passkey_grid(grid, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
