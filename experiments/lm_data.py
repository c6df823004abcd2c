"""Language-model data: prepare a corpus once into flat token files, then read windows.

    python run.py data lm                                    # the stdlib, byte tokens
    python run.py data lm --corpus books/ --tokenizer 20B_tokenizer.json --data_dir data/lm/books

A prepared directory holds ``train.bin`` and ``val.bin`` (every token of the split, one
after the other, native-endian ``uint16`` when the vocabulary fits, else ``uint32``;
read with ``np.memmap``) and ``meta.json`` (tokenizer, dtype, and per split the documents,
tokens and UTF-8 bytes, so bits per byte can be computed; the request it was made from).
When the tokenizer has an end-of-text id it follows every document.

The held-out split: a document is in ``val`` iff the first 8 bytes of the SHA-256 of its
name, as a fraction of 2**64, fall below ``val_fraction`` (2%), so adding documents
never moves others; if no document falls there, the last one does. Windows never mix the
splits.

Batches are pure functions of their arguments, so a resumed run sees the same data:
``train_windows`` draws ``batch_size`` uniform start positions from a numpy Generator
seeded with (seed, split, step); ``eval_windows`` are a fixed set of consecutive
windows (window j starts at token j * seq_len, so every token of the split is predicted
at most once), evenly thinned to at most ``max_windows``.

Metrics (``lm_metrics``): ``ppl = exp(mean token NLL)``; ``bpb = total NLL in nats /
(ln 2 * UTF-8 bytes of the text scored)``. The bytes scored are taken as the scored
tokens times the split's bytes per token (``meta.json``'s bytes / tokens, end-of-text
tokens counted as tokens of zero bytes): exact for the byte tokenizer (one byte per
token, no end-of-text id), and for a BPE exact up to how the bytes per token of the
scored windows differ from the split's average.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import uuid

import numpy as np

from experiments.lm_corpus import Corpus, open_corpus
from experiments.tokenizer import ByteTokenizer, Tokenizer, load_tokenizer

FORMAT = 1
META = "meta.json"
SPLITS = ("train", "val")
VAL_FRACTION = 0.02
DEFAULT_ROOT = os.path.join("data", "lm")


class LMDataError(ValueError):
    """Bad input to preparation or reading; the message names the fix."""


class LMDataMissing(FileNotFoundError):
    """No prepared data where the task looks; the message names the command."""


# ---------------------------------------------------------------------------- rules


def is_val(name: str, val_fraction: float = VAL_FRACTION) -> bool:
    """The split rule: SHA-256 of the document name, first 8 bytes / 2**64 < fraction."""
    head = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")
    return head / 2.0**64 < val_fraction


def token_dtype(vocab_size: int) -> np.dtype:
    if vocab_size <= 2**16:
        return np.dtype(np.uint16)
    if vocab_size <= 2**32:
        return np.dtype(np.uint32)
    raise LMDataError(f"vocabulary of {vocab_size} ids does not fit uint32 token files")


def default_data_dir(corpus: str | None, tokenizer: str | None) -> str:
    """``data/lm/<corpus>-<tokenizer>``: where ``run.py data lm`` writes without
    ``--data_dir`` (``data/lm/stdlib-byte`` for the defaults)."""

    def stem(spec, default):
        if not spec:
            return default
        if spec.startswith("tfds:"):
            return spec[5:].replace(":", "-")
        base = os.path.basename(os.path.normpath(spec))
        return base.split(".")[0] or default

    return os.path.join(DEFAULT_ROOT, f"{stem(corpus, 'stdlib')}-{stem(tokenizer, 'byte')}")


def prepare_command(data_dir: str) -> str:
    return (
        "python run.py data lm --corpus <text file, directory, .jsonl or tfds:NAME; "
        f"leave it out for the Python standard library> --data_dir {data_dir}"
    )


# ---------------------------------------------------------------------------- prepare


def tokenizer_identity(tokenizer: Tokenizer) -> dict:
    """What identifies a tokenizer in ``meta.json``: "byte", or a tokenizer.json's hash
    (not its path: the same file elsewhere is the same tokenizer)."""
    if isinstance(tokenizer, ByteTokenizer):
        return {"kind": "byte"}
    with open(tokenizer.name, "rb") as f:  # HFTokenizer.name: the file it read
        return {"kind": "tokenizer.json", "sha256": hashlib.sha256(f.read()).hexdigest()}


def _encode(tokenizer: Tokenizer, text: str, dtype: np.dtype) -> np.ndarray:
    if isinstance(tokenizer, ByteTokenizer):  # the same ids as encode(), without a list
        return np.frombuffer(text.encode("utf-8"), np.uint8).astype(dtype)
    ids = np.asarray(tokenizer.encode(text), np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= tokenizer.vocab_size):
        raise LMDataError(
            f"tokenizer {tokenizer.name} produced id {int(ids.max())} outside its vocabulary "
            f"of {tokenizer.vocab_size}"
        )
    return ids.astype(dtype)


def _check_target(data_dir: str, request: dict) -> dict | None:
    """The existing metadata if ``data_dir`` holds this very request; None if it is free.

    Anything else there is refused: a prepared directory is never silently replaced.
    """
    if not os.path.exists(data_dir):
        return None
    if not os.path.isdir(data_dir):
        raise LMDataError(f"--data_dir {data_dir} is a file; give a directory")
    meta_path = os.path.join(data_dir, META)
    if not os.path.exists(meta_path):
        if os.listdir(data_dir):
            raise LMDataError(
                f"{data_dir} exists and is not a prepared LM data set (no {META}); give "
                "another --data_dir, or remove that directory yourself"
            )
        return None
    meta = read_meta(data_dir)
    if meta.get("request") == request:
        return meta
    old = meta.get("request", {})
    changed = sorted(k for k in set(old) | set(request) if old.get(k) != request.get(k))
    raise LMDataError(
        f"{data_dir} already holds LM data prepared with another {', '.join(changed)}; "
        "give another --data_dir, or remove that directory yourself to remake it"
    )


def prepare(
    data_dir: str,
    corpus: str | Corpus | None = None,
    tokenizer: str | None = None,
    *,
    val_fraction: float = VAL_FRACTION,
    progress: bool = True,
) -> str:
    """Tokenise ``corpus`` into ``data_dir``; returns a sentence saying what is there."""
    if not 0.0 < val_fraction < 0.5:
        raise LMDataError(f"val_fraction={val_fraction} must be in (0, 0.5)")
    tok = load_tokenizer(tokenizer or "byte")
    dtype = token_dtype(tok.vocab_size)
    source = corpus if isinstance(corpus, Corpus) else open_corpus(corpus)
    request = {
        "format": FORMAT,
        "corpus": source.spec,
        "corpus_fingerprint": source.fingerprint,
        "tokenizer": tokenizer_identity(tok),
        "val_fraction": val_fraction,
    }
    existing = _check_target(data_dir, request)
    if existing is not None:
        return f"lm: already prepared in {data_dir} ({_summary(existing)})"

    # Written beside the target and renamed into place at the end: an interrupted run
    # leaves no half-made data set that a later run would take for a prepared one.
    target = os.path.abspath(data_dir).rstrip(os.sep)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    staging = f"{target}.tmp-{uuid.uuid4().hex[:12]}"
    os.makedirs(staging)
    try:
        counts = _write_splits(staging, source, tok, dtype, val_fraction, progress)
        meta = {
            "format": FORMAT,
            "request": request,
            "corpus": source.description,
            "tokenizer": {"name": tok.name, "vocab_size": tok.vocab_size, "eos_id": tok.eos_id},
            "dtype": dtype.name,
            "byteorder": "little" if np.little_endian else "big",
            "val_rule": "sha256(name)[:8] / 2**64 < val_fraction, else the last document",
            "splits": counts,
        }
        with open(os.path.join(staging, META), "w") as f:
            json.dump(meta, f, indent=1)
        if os.path.isdir(data_dir):  # an empty directory made beforehand
            os.rmdir(data_dir)
        os.replace(staging, data_dir)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)
    return f"lm: ready in {data_dir} ({_summary(meta)})"


def _summary(meta: dict) -> str:
    s = meta["splits"]
    return (
        f"{meta['corpus']}; {meta['tokenizer']['name']} tokens, {meta['dtype']}; train "
        f"{s['train']['tokens']:,} tokens in {s['train']['documents']} documents, val "
        f"{s['val']['tokens']:,} in {s['val']['documents']}"
    )


def _write_splits(directory, source: Corpus, tok, dtype, val_fraction, progress) -> dict:
    from tqdm.auto import tqdm

    counts = {s: {"file": f"{s}.bin", "documents": 0, "tokens": 0, "bytes": 0} for s in SPLITS}
    files = {s: open(os.path.join(directory, f"{s}.bin"), "wb") for s in SPLITS}
    eos = None if tok.eos_id is None else np.asarray([tok.eos_id], dtype)
    pending = None  # (split, ids, bytes): held back one document for the fallback rule

    def flush(split, ids, n_bytes):
        files[split].write(ids.tobytes())
        for key, n in (("documents", 1), ("tokens", len(ids)), ("bytes", n_bytes)):
            counts[split][key] += n

    try:
        bar = tqdm(total=source.count, desc="tokenising", unit="doc", disable=not progress)
        with bar:
            for doc in source.documents():
                bar.update(1)
                if not doc.text:
                    continue
                ids = _encode(tok, doc.text, dtype)
                if eos is not None:
                    ids = np.concatenate([ids, eos])
                if pending is not None:
                    flush(*pending)
                split = "val" if is_val(doc.name, val_fraction) else "train"
                pending = (split, ids, len(doc.text.encode("utf-8")))
        if pending is not None:
            if counts["val"]["documents"] == 0 and counts["train"]["documents"] > 0:
                pending = ("val", *pending[1:])  # nothing hashed into val: hold out the last
            flush(*pending)
    finally:
        for f in files.values():
            f.close()
    n_docs = sum(c["documents"] for c in counts.values())
    if n_docs < 2 or counts["train"]["documents"] == 0:
        raise LMDataError(
            f"corpus {source.description} has {n_docs} non-empty document(s) and "
            f"{counts['train']['documents']} for training; a held-out split needs at least "
            "two, most of them for training (a text file is cut into documents at blank lines)"
        )
    return counts


# ---------------------------------------------------------------------------- read


def read_meta(data_dir: str) -> dict:
    path = os.path.join(data_dir, META)
    if not os.path.exists(path):
        raise LMDataMissing(
            f"no prepared LM data in {data_dir} (no {META}): make it with "
            f"`{prepare_command(data_dir)}`"
        )
    with open(path) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT:
        raise LMDataError(
            f"{path}: format {meta.get('format')!r}, this code reads {FORMAT}; remake it "
            f"with `{prepare_command(data_dir)}` into a new --data_dir"
        )
    return meta


def open_tokens(data_dir: str, split: str, meta: dict | None = None) -> np.memmap:
    """The tokens of ``split`` as a read-only memory map (nothing is loaded up front)."""
    meta = meta or read_meta(data_dir)
    if split not in meta["splits"]:
        raise LMDataError(f"unknown LM split {split!r}; valid: {', '.join(meta['splits'])}")
    info = meta["splits"][split]
    if (meta.get("byteorder") or "little") != ("little" if np.little_endian else "big"):
        raise LMDataError(f"{data_dir} was written on a machine of the other byte order")
    path = os.path.join(data_dir, info["file"])
    dtype = np.dtype(meta["dtype"])
    expected = info["tokens"] * dtype.itemsize
    if not os.path.exists(path) or os.path.getsize(path) != expected:
        raise LMDataError(
            f"{path} is missing or not {expected} bytes as {META} says; remake the data "
            f"with `{prepare_command(data_dir)}` into a new --data_dir"
        )
    if info["tokens"] == 0:
        return np.zeros((0,), dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(info["tokens"],))


def train_windows(tokens, rng: np.random.Generator, batch_size: int, seq_len: int) -> np.ndarray:
    """[batch_size, seq_len + 1] int32 windows at uniform random starts."""
    n = len(tokens) - seq_len  # start positions that leave seq_len + 1 tokens
    starts = rng.integers(0, n, size=batch_size)
    return np.asarray(tokens[starts[:, None] + np.arange(seq_len + 1)], np.int32)


def eval_window_starts(n_tokens: int, seq_len: int, max_windows: int | None) -> np.ndarray:
    """Starts of the evaluation windows: consecutive (stride seq_len, so windows share
    only their boundary token and each target is scored once), evenly thinned to at most
    ``max_windows`` so that a cap still spans the whole split."""
    total = (n_tokens - 1) // seq_len
    index = np.arange(total)
    if max_windows is not None and total > max_windows:
        index = np.unique(np.round(np.linspace(0, total - 1, max_windows)).astype(np.int64))
    return index * seq_len


def lm_metrics(mean_nll: float, tokens: int, n_bytes: int) -> dict[str, float]:
    """Perplexity and bits per byte of a mean token NLL (nats), given the split's tokens
    and UTF-8 bytes (``meta.json``): bpb = mean_nll * tokens / (bytes * ln 2)."""
    ppl = math.exp(mean_nll) if mean_nll < 700 else math.inf
    return {"ppl": ppl, "bpb": mean_nll * tokens / (n_bytes * math.log(2))}
