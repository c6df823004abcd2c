"""Language-model data end to end: readers, preparation, windows, metrics, the task, the
configs, and a few training steps (experiments/lm_corpus.py, lm_data.py, tasks/lm.py)."""

import itertools
import json
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from experiments import lm_corpus, lm_data
from experiments.tasks.lm import LanguageModeling
from experiments.tasks.registry import make_task
from experiments.tokenizer import load_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_docs(directory, n=40, size=300):
    """``n`` text files of distinct content (a marker line, then filler), in two folders."""
    texts = {}
    for i in range(n):
        name = f"{'a' if i % 2 else 'b'}/doc{i:03d}.txt"
        text = f"<<doc {i}>> ümlaut ✓\n" + f"line {i} of doc {i}\n" * (size // 20)
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        texts[name] = text
    return texts


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return root, write_docs(root)


@pytest.fixture(scope="module")
def prepared(corpus_dir, tmp_path_factory):
    root, texts = corpus_dir
    data_dir = tmp_path_factory.mktemp("data") / "byte"
    lm_data.prepare(str(data_dir), str(root), None, val_fraction=0.2, progress=False)
    return data_dir, texts


# ---------------------------------------------------------------------------- readers


def test_text_file_is_cut_at_blank_lines_and_concatenates_back(tmp_path):
    text = "first para\nstill first\n\n\nsecond\n\nthird\n"
    (tmp_path / "book.txt").write_text(text)
    docs = list(lm_corpus.open_corpus(str(tmp_path / "book.txt")).documents())
    assert [d.name for d in docs] == ["book.txt:0", "book.txt:1", "book.txt:2"]
    assert [d.text for d in docs] == ["first para\nstill first\n\n\n", "second\n\n", "third\n"]
    assert "".join(d.text for d in docs) == text


def test_directory_is_recursive_sorted_and_skips_hidden_files(tmp_path):
    for rel in ("b/z.txt", "a/y.txt", "a/sub/x.txt", "c.txt", ".hidden", "a/.git/config"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    corpus = lm_corpus.open_corpus(str(tmp_path))
    docs = list(corpus.documents())
    assert [d.name for d in docs] == ["a/sub/x.txt", "a/y.txt", "b/z.txt", "c.txt"]
    assert [d.text for d in docs] == [d.name for d in docs] and corpus.count == 4
    (tmp_path / "c.txt").write_bytes(b"\x00\x01binary")
    with pytest.raises(lm_corpus.CorpusError, match="looks binary"):
        list(lm_corpus.open_corpus(str(tmp_path)).documents())


def test_jsonl_reads_the_text_field_and_names_a_bad_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "one", "meta": 1}\n\n{"text": "two ✓"}\n')
    docs = list(lm_corpus.open_corpus(str(path)).documents())
    assert [(d.name, d.text) for d in docs] == [("c.jsonl:1", "one"), ("c.jsonl:3", "two ✓")]
    path.write_text('{"text": "one"}\n{"body": "no text"}\n')
    with pytest.raises(lm_corpus.CorpusError, match=r"c.jsonl:2: expected a JSON object"):
        list(lm_corpus.open_corpus(str(path)).documents())
    path.write_text("{not json\n")
    with pytest.raises(lm_corpus.CorpusError, match=r"c.jsonl:1: not JSON"):
        list(lm_corpus.open_corpus(str(path)).documents())


def test_unknown_corpus_and_empty_directory_are_one_line(tmp_path):
    with pytest.raises(lm_corpus.CorpusError, match="no such file or directory; give a text"):
        lm_corpus.open_corpus(str(tmp_path / "nowhere"))
    with pytest.raises(lm_corpus.CorpusError, match="no files found"):
        lm_corpus.open_corpus(str(tmp_path))


def test_stdlib_corpus_is_the_standard_librarys_own_source():
    corpus = lm_corpus.open_corpus(None)
    assert corpus.spec == "stdlib" and corpus.count > 200
    docs = list(itertools.islice(corpus.documents(), 3))  # reading all takes seconds
    assert all(d.name.endswith(".py") for d in docs)
    names = [os.path.relpath(p, lm_corpus.stdlib_root()) for p in lm_corpus.stdlib_files()]
    assert names == sorted(names, key=lambda n: n.split(os.sep)) and "os.py" in names
    for name in names:
        parts = set(name.split(os.sep)[:-1])
        assert not parts & {"test", "tests", "idle_test", "site-packages"}, name


def test_tfds_corpus_reads_the_text_feature_or_says_what_is_missing(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets", reason="tfds: requirements-lra.txt")
    with pytest.raises(lm_corpus.CorpusError, match="not prepared in array_record form"):
        lm_corpus.open_corpus("tfds:no_such_dataset_here")
    with tfds.testing.mock_data(num_examples=5):
        corpus = lm_corpus.open_corpus("tfds:imdb_reviews:test")
        docs = list(corpus.documents())
        lm_data.prepare(str(tmp_path / "imdb"), corpus, None, val_fraction=0.4, progress=False)
    assert corpus.count == 5 and [d.name for d in docs][0] == "imdb_reviews/test/0"
    assert all(isinstance(d.text, str) for d in docs)
    assert lm_data.read_meta(str(tmp_path / "imdb"))["corpus"].startswith("tfds imdb_reviews")


# ---------------------------------------------------------------------------- prepare


def test_round_trip_files_metadata_and_disjoint_splits(prepared):
    data_dir, texts = prepared
    meta = json.loads((data_dir / "meta.json").read_text())
    assert meta["dtype"] == "uint16" and meta["tokenizer"]["vocab_size"] == 256
    want = {"train": "", "val": ""}
    for name in sorted(texts, key=lambda n: n.split("/")):  # the reader's order
        want["val" if lm_data.is_val(name, 0.2) else "train"] += texts[name]
    assert want["val"] and want["train"]
    for split in ("train", "val"):
        tokens = lm_data.open_tokens(str(data_dir), split)
        assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16
        assert bytes(np.asarray(tokens, np.uint8)).decode() == want[split]
        info = meta["splits"][split]
        assert info["tokens"] == info["bytes"] == len(want[split].encode())
        markers = {line for line in want[split].splitlines() if line.startswith("<<")}
        assert info["documents"] == len(markers)
    train_markers = {ln for ln in want["train"].splitlines() if ln.startswith("<<")}
    assert not train_markers & {ln for ln in want["val"].splitlines() if ln.startswith("<<")}


def test_bpe_tokens_are_uint16_with_end_of_text_after_each_document(tokenizer_json, tmp_path):
    (tmp_path / "c.jsonl").write_text(
        "".join(json.dumps({"text": f"Hello, world! doc {i}"}) + "\n" for i in range(12))
    )
    data_dir = tmp_path / "bpe"
    lm_data.prepare(str(data_dir), str(tmp_path / "c.jsonl"), str(tokenizer_json), progress=False)
    tok = load_tokenizer(str(tokenizer_json))
    meta = lm_data.read_meta(str(data_dir))
    assert meta["dtype"] == "uint16" and meta["tokenizer"]["eos_id"] == tok.eos_id
    docs = {}
    for split in ("train", "val"):
        tokens = np.asarray(lm_data.open_tokens(str(data_dir), split), np.int64)
        assert tokens[-1] == tok.eos_id
        pieces = np.split(tokens, np.flatnonzero(tokens == tok.eos_id) + 1)[:-1]
        docs[split] = [tok.decode(p[:-1].tolist()) for p in pieces]
        info = meta["splits"][split]
        assert info["bytes"] == sum(len(d.encode()) for d in docs[split])
        assert info["tokens"] == len(tokens) and info["documents"] == len(pieces)
    assert sorted(docs["train"] + docs["val"]) == sorted(
        f"Hello, world! doc {i}" for i in range(12)
    )
    assert lm_data.token_dtype(65_536) == np.uint16 and lm_data.token_dtype(65_537) == np.uint32


def test_prepare_never_overwrites_a_different_data_set(prepared, corpus_dir, tokenizer_json):
    data_dir, _ = prepared
    root, _ = corpus_dir
    again = lm_data.prepare(str(data_dir), str(root), None, val_fraction=0.2, progress=False)
    assert again.startswith(f"lm: already prepared in {data_dir}")
    with pytest.raises(lm_data.LMDataError, match="another tokenizer; give another --data_dir"):
        lm_data.prepare(str(data_dir), str(root), str(tokenizer_json), val_fraction=0.2)
    with pytest.raises(lm_data.LMDataError, match="another val_fraction"):
        lm_data.prepare(str(data_dir), str(root), None, val_fraction=0.1)
    other = data_dir.parent / "occupied"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(lm_data.LMDataError, match="is not a prepared LM data set"):
        lm_data.prepare(str(other), str(root), None)
    assert (other / "notes.txt").read_text() == "mine"


def test_a_corpus_too_small_to_hold_out_is_refused(tmp_path):
    (tmp_path / "one.txt").write_text("a single paragraph\n")
    with pytest.raises(lm_data.LMDataError, match="needs at least two"):
        lm_data.prepare(str(tmp_path / "d"), str(tmp_path / "one.txt"), None, progress=False)
    assert not (tmp_path / "d").exists() and os.listdir(tmp_path) == ["one.txt"]


def test_the_last_document_is_held_out_when_none_hashes_there(tmp_path):
    (tmp_path / "t.txt").write_text("one\n\ntwo\n\nthree\n")
    lm_data.prepare(str(tmp_path / "d"), str(tmp_path / "t.txt"), None, val_fraction=0.001)
    val = lm_data.open_tokens(str(tmp_path / "d"), "val")
    assert bytes(np.asarray(val, np.uint8)) == b"three\n"


# ---------------------------------------------------------------------------- batches


def test_train_batches_are_a_pure_function_of_seed_and_step(prepared):
    data_dir, _ = prepared
    task = make_task("lm", data_dir=str(data_dir), seq_len=16)
    assert task.spec.vocab_size == 256 and task.spec.kind == "lm"
    a, b = task.batch("train", 3, 4, seed=1), task.batch("train", 3, 4, seed=1)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["inputs"], task.batch("train", 4, 4, seed=1)["inputs"])
    assert not np.array_equal(a["inputs"], task.batch("train", 3, 4, seed=2)["inputs"])
    assert a["inputs"].dtype == a["targets"].dtype == np.int32 and a["inputs"].shape == (4, 16)
    np.testing.assert_array_equal(a["inputs"][:, 1:], a["targets"][:, :-1])
    train = bytes(np.asarray(lm_data.open_tokens(str(data_dir), "train"), np.uint8))
    for row in np.concatenate([a["inputs"], a["targets"][:, -1:]], axis=1):
        assert bytes(row.astype(np.uint8)) in train  # a window of the train split


def test_eval_windows_are_consecutive_fixed_and_padded_with_zero_weight(prepared):
    data_dir, _ = prepared
    val = np.asarray(lm_data.open_tokens(str(data_dir), "val"), np.int32)
    task = LanguageModeling(data_dir=str(data_dir), seq_len=32, eval_windows=None)
    n_windows = (len(val) - 1) // 32
    steps = task.eval_steps("val", 8)
    assert steps == math.ceil(n_windows / 8)
    rows = [task.batch("val", s, 8, seed=s) for s in range(steps)]  # the seed is unused
    weights = np.concatenate([r["weight"] for r in rows])
    assert weights.sum() == n_windows and (weights[n_windows:] == 0).all()
    targets = np.concatenate([r["targets"] for r in rows])[:n_windows]
    np.testing.assert_array_equal(targets.ravel(), val[1 : 1 + n_windows * 32])
    np.testing.assert_array_equal(rows[0]["inputs"], task.batch("test", 0, 8, 0)["inputs"])
    starts = lm_data.eval_window_starts(10_001, 10, 7)
    assert len(starts) == 7 and starts[0] == 0 and starts[-1] == 999 * 10


def test_ppl_and_bpb_match_a_numpy_derivation(prepared):
    data_dir, _ = prepared
    task = LanguageModeling(data_dir=str(data_dir), seq_len=16)
    batch = task.batch("val", 0, 4, 0)
    logits = np.random.default_rng(0).normal(size=(4, 16, 256))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, batch["targets"][..., None], -1)[..., 0]
    mean = nll.mean()
    got = task.eval_metrics({"eval_loss": mean, "eval_accuracy": 0.5, "test_loss": mean})
    assert got["eval_ppl"] == pytest.approx(np.exp(mean)) == got["test_ppl"]
    # The byte tokenizer: one byte per scored token, so bpb = total NLL / (ln 2 * bytes).
    n_bytes = len(bytes(batch["targets"].astype(np.uint8).ravel()))
    assert got["eval_bpb"] == pytest.approx(nll.sum() / (math.log(2) * n_bytes))
    # A tokenizer with 3 bytes per token: bits per byte is a third of bits per token.
    assert lm_data.lm_metrics(2.0, 100, 300)["bpb"] == pytest.approx(2.0 / math.log(2) / 3)


def test_missing_data_and_bad_options_are_one_line(tmp_path, prepared, tokenizer_json):
    task = make_task("lm", data_dir=str(tmp_path / "none"))
    with pytest.raises(lm_data.LMDataMissing, match="python run.py data lm --corpus .* --data_dir"):
        _ = task.spec
    data_dir, _ = prepared
    with pytest.raises(ValueError, match="fewer than seq_len"):
        _ = LanguageModeling(data_dir=str(data_dir), seq_len=10**6).spec
    with pytest.raises(ValueError, match="was prepared with the tokenizer byte"):
        _ = LanguageModeling(data_dir=str(data_dir), tokenizer=str(tokenizer_json)).spec
    assert LanguageModeling(data_dir=str(data_dir), tokenizer="byte").spec.vocab_size == 256
    with pytest.raises(ValueError, match="seq_len=0 must be a positive integer"):
        LanguageModeling(seq_len=0)


# ---------------------------------------------------------------------------- end to end


def test_a_few_training_steps_on_a_prepared_corpus(prepared, tmp_path):
    from configs.lm import stdlib
    from experiments.config import override
    from experiments.train import train

    data_dir, _ = prepared
    config = override(
        stdlib.get_config("transformer,smoke"),
        {"task.options.data_dir": str(data_dir), "train.steps": 3, "train.tensorboard": False},
    )
    results = train(config, str(tmp_path / "run"))
    final = results["final"]
    assert math.isfinite(final["loss"]) and math.isfinite(final["eval_loss"])
    assert final["eval_loss"] < math.log(256) + 1
    # The loop logs what the task derives: perplexity (and bits per byte) beside the loss.
    assert final["eval_ppl"] == pytest.approx(math.exp(final["eval_loss"]))
    assert "eval_bpb" in final


def test_run_py_data_lm(corpus_dir, tmp_path):
    root, _ = corpus_dir
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, os.path.join(ROOT, "run.py"), "data", "lm", "--corpus", str(root)]
    ok = subprocess.run(
        [*command, "--data_dir", str(tmp_path / "d")], env=env, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert f"lm: ready in {tmp_path / 'd'}" in ok.stdout
    bad = subprocess.run(
        [*command[:-1], str(tmp_path / "missing")], env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "no such file or directory" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert lm_data.default_data_dir(None, None) == os.path.join("data", "lm", "stdlib-byte")
    assert lm_data.default_data_dir("x/books.jsonl", "t/20B.json").endswith("books-20B")


# ---------------------------------------------------------------------------- configs


def _count(config, vocab_size, seq_len):
    import jax
    import jax.numpy as jnp

    from arch.utils import count_params
    from experiments.models import build_model
    from experiments.tasks.base import TaskSpec

    model = build_model(config, TaskSpec("lm", "lm", seq_len, vocab_size=vocab_size))
    tokens = jnp.zeros((1, seq_len), jnp.int32)
    return count_params(jax.eval_shape(lambda: model.init(jax.random.key(0), tokens)))


def test_cpu_configs_match_parameter_counts_within_a_few_percent():
    import arch
    from configs.lm import common, stdlib

    built_in = {n for n, s in arch.ARCHS.items() if s.mixer.__module__.startswith("arch.")}
    assert built_in <= set(common.CPU_SHAPES) == set(common.CPU_PARAMS)
    reference = common.CPU_PARAMS["transformer"]
    for name in sorted(common.CPU_SHAPES):
        assert _count(stdlib.get_config(name), 256, 256) == common.CPU_PARAMS[name], name
        assert abs(common.CPU_PARAMS[name] / reference - 1) < 0.05, name


def test_pile_transformer_is_pythia_160m():
    """The GPT-NeoX options arch/convert reads off Pythia-160M's config.json, and its
    85,056,000 non-embedding parameters (the Pythia model card)."""
    from arch.convert import gpt_neox
    from configs.lm import pile

    pythia = {"hidden_size": 768, "num_attention_heads": 12, "num_hidden_layers": 12,
              "vocab_size": 50304, "intermediate_size": 3072, "rotary_pct": 0.25,
              "rotary_emb_base": 10000, "use_parallel_residual": True,
              "tie_word_embeddings": False, "hidden_act": "gelu"}  # fmt: skip
    config = pile.get_config("transformer")
    options = gpt_neox.build_options(pythia)
    for key in ("vocab_size", "max_len", "norm_eps"):
        options.pop(key)
    assert {k: config.model.to_dict()[k] for k in options} == options
    embeddings = 2 * 50277 * 768  # input and (untied) output matrices
    assert _count(config, 50277, 64) - embeddings == 85_056_000
    assert (config.model.d_model, config.model.n_layers) == (768, 12)
    assert (pile.get_config("mamba").model.n_layers, pile.get_config("rwkv").train.b2) == (24, 0.99)


class Flags(SimpleNamespace):
    """absl's parsed flags as cmd_data reads them: attributes, and ``flags[name].present``
    (False here: no flag was given on the command line)."""

    def __getitem__(self, name):
        return SimpleNamespace(present=False)


def test_cmd_data_lists_lm_and_writes_to_its_own_default_directory(
    corpus_dir, tmp_path, monkeypatch
):
    from experiments import cli

    with pytest.raises(ValueError, match=r"tasks: listops, .*, lm$"):
        cli.cmd_data([], None)
    root, _ = corpus_dir
    monkeypatch.chdir(tmp_path)
    cli.cmd_data(["lm"], Flags(data_dir="data", corpus=str(root), tokenizer=None))
    # Without --data_dir: data/lm/<corpus>-<tokenizer>, not the LRA root "data" itself.
    assert (tmp_path / "data" / "lm" / f"{root.name}-byte" / "meta.json").exists()
