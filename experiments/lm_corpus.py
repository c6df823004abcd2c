"""Where language-model text comes from: ``open_corpus(spec)`` -> a ``Corpus``.

A corpus is a named, ordered stream of documents; ``experiments/lm_data.py`` tokenises
it. ``spec`` is one of

- None or ``"stdlib"``: the Python standard library's own ``*.py`` files, which exist
  on every machine that runs this code (no download); one document per file;
- a directory: every non-hidden file under it (recursively, sorted by relative path),
  one document per file;
- a ``.jsonl`` file: one document per non-empty line, a JSON object with a ``"text"``
  string (the layout of the Pile and most web corpora);
- any other file: plain text, cut into documents after each run of blank lines, so
  that a single file (a book, tiny-shakespeare) still has documents to hold out;
- ``tfds:NAME`` or ``tfds:NAME:SPLIT`` (default split ``train``): the ``text`` feature of
  a tensorflow-datasets data set already prepared in array_record form under the tfds
  data directory (``TFDS_DATA_DIR`` or ``~/tensorflow_datasets``); nothing is downloaded.

Files are read as UTF-8; undecodable bytes become U+FFFD (and count as its 3 bytes), so
one stray Latin-1 byte does not stop a large corpus. A document's ``name`` is stable
across machines (a relative path, a line number, a block number): the held-out split is
a function of it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sysconfig
from collections.abc import Callable, Iterator

STDLIB = "stdlib"
# Directories of the standard library that are not its own source: the test suites and
# the third-party packages installed beside it.
STDLIB_SKIP_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages"})
CORPUS_HELP = (
    "give a text file, a directory of text files, a .jsonl file (a 'text' field per line) "
    "or tfds:NAME[:SPLIT], or leave --corpus out for the Python standard library"
)


class CorpusError(ValueError):
    """A corpus that cannot be read as asked; the message names the fix."""


@dataclasses.dataclass(frozen=True)
class Document:
    name: str  # stable across machines: the held-out split is a hash of it
    text: str


@dataclasses.dataclass(frozen=True)
class Corpus:
    spec: str  # what --corpus resolved to: "stdlib", an absolute path, tfds:NAME:SPLIT
    description: str  # one line for the metadata and the progress bar
    fingerprint: str  # sha256 of what identifies the content (file names and sizes)
    count: int | None  # documents, when known before reading (a progress bar total)
    read: Callable[[], Iterator[Document]]  # a fresh pass over the documents

    def documents(self) -> Iterator[Document]:
        return self.read()


def open_corpus(spec: str | None = None) -> Corpus:
    """The corpus that ``--corpus spec`` names (see the module docstring)."""
    if spec in (None, "", STDLIB):
        return stdlib_corpus()
    if spec.startswith("tfds:"):
        return tfds_corpus(spec)
    path = os.path.abspath(os.path.expanduser(spec))
    if os.path.isdir(path):
        return directory_corpus(path)
    if os.path.isfile(path):
        if path.endswith(".jsonl"):
            return jsonl_corpus(path)
        return text_file_corpus(path)
    raise CorpusError(f"--corpus {spec}: no such file or directory; {CORPUS_HELP}")


# ---------------------------------------------------------------------------- files


def _fingerprint(entries) -> str:
    digest = hashlib.sha256()
    for name, size in entries:
        digest.update(f"{name}\0{size}\n".encode())
    return digest.hexdigest()


def _read_text(path: str) -> str:
    with open(path, "rb") as f:
        data = f.read()
    if b"\0" in data:
        raise CorpusError(
            f"{path} looks binary (it has NUL bytes); remove it from the corpus or point "
            "--corpus at text files only"
        )
    return data.decode("utf-8", errors="replace")


def _files_corpus(spec: str, description: str, root: str, files: list[str]) -> Corpus:
    """One document per file of ``files`` (absolute paths under ``root``, in order)."""
    names = [os.path.relpath(f, root).replace(os.sep, "/") for f in files]
    if not files:
        raise CorpusError(f"--corpus {spec}: no files found; {CORPUS_HELP}")
    fingerprint = _fingerprint((n, os.path.getsize(f)) for n, f in zip(names, files, strict=True))

    def read():
        for name, path in zip(names, files, strict=True):
            yield Document(name, _read_text(path))

    return Corpus(spec, f"{description} ({len(files)} files)", fingerprint, len(files), read)


def list_files(root: str, *, suffix: str = "", skip_dirs=frozenset()) -> list[str]:
    """Regular non-hidden files under ``root``, sorted by relative path (deterministic on
    every filesystem: ``os.walk`` order is not)."""
    found = []
    for parent, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in skip_dirs]
        for name in files:
            if not name.startswith(".") and name.endswith(suffix):
                found.append(os.path.join(parent, name))
    return sorted(found, key=lambda p: os.path.relpath(p, root).split(os.sep))


def stdlib_root() -> str:
    return sysconfig.get_paths()["stdlib"]


def stdlib_files() -> list[str]:
    """The standard library's ``*.py`` files, without its test suites and site-packages."""
    return list_files(stdlib_root(), suffix=".py", skip_dirs=STDLIB_SKIP_DIRS)


def stdlib_corpus() -> Corpus:
    description = f"Python {sysconfig.get_python_version()} stdlib"
    return _files_corpus(STDLIB, description, stdlib_root(), stdlib_files())


def directory_corpus(path: str) -> Corpus:
    return _files_corpus(path, f"directory {path}", path, list_files(path))


def text_file_corpus(path: str) -> Corpus:
    """A plain text file, one document per block: a block ends after a run of blank
    lines (which stay in it), so the blocks concatenate back to the file."""
    base = os.path.basename(path)

    def read():
        block, index = [], 0
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            for line in f:
                blank = not line.strip()
                if block and not blank and not block[-1].strip():
                    yield Document(f"{base}:{index}", "".join(block))
                    block, index = [], index + 1
                block.append(line)
        if block:
            yield Document(f"{base}:{index}", "".join(block))

    fingerprint = _fingerprint([(base, os.path.getsize(path))])
    return Corpus(path, f"text file {path}", fingerprint, None, read)


def jsonl_corpus(path: str) -> Corpus:
    base = os.path.basename(path)

    def read():
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise CorpusError(f"{path}:{number}: not JSON ({error.msg})") from None
                text = record.get("text") if isinstance(record, dict) else None
                if not isinstance(text, str):
                    raise CorpusError(
                        f"{path}:{number}: expected a JSON object with a 'text' string"
                    )
                yield Document(f"{base}:{number}", text)

    fingerprint = _fingerprint([(base, os.path.getsize(path))])
    return Corpus(path, f"JSONL {path}", fingerprint, None, read)


# ---------------------------------------------------------------------------- tfds


def tfds_corpus(spec: str, feature: str = "text") -> Corpus:
    """``tfds:NAME[:SPLIT]``: read through ``tfds.data_source`` (array_record files, no
    TensorFlow needed), never downloading."""
    _, _, rest = spec.partition(":")
    name, _, split = rest.partition(":")
    split = split or "train"
    if not name:
        raise CorpusError(f"--corpus {spec}: give a data set name, e.g. tfds:imdb_reviews")
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise CorpusError(
            f"--corpus {spec} needs tensorflow-datasets: pip install -r requirements-lra.txt"
        ) from None
    try:
        source = tfds.data_source(name, split=split, download=False)
    except Exception as error:  # noqa: BLE001 - tfds raises many types for "not there"
        first = (str(error).splitlines() or [""])[0][:160]
        raise CorpusError(
            f"--corpus {spec}: the tfds data set {name!r} (split {split!r}) is not prepared "
            "in array_record form under the tfds data directory; prepare it with tfds "
            f"first ({type(error).__name__}: {first})"
        ) from None
    n = len(source)

    def read():
        for index in range(n):
            example = source[index]
            if feature not in example:
                raise CorpusError(
                    f"--corpus {spec}: examples have no {feature!r} feature "
                    f"(features: {', '.join(sorted(example))})"
                )
            text = example[feature]
            if isinstance(text, bytes):
                text = text.decode("utf-8", errors="replace")
            yield Document(f"{name}/{split}/{index}", str(text))

    fingerprint = _fingerprint([(f"{name}/{split}", n)])
    return Corpus(
        f"tfds:{name}:{split}", f"tfds {name} ({split}, {n} examples)", fingerprint, n, read
    )
