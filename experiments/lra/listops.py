"""ListOps (Nangia & Bowman 2018, as generated for LRA by ``data/listops.py``).

Nested expressions over the digits with MIN, MAX, MED (median) and SM (sum mod 10),
e.g. ``[MAX 2 9 [MIN 4 7 ] 0 ]`` -> 9. The generator follows the LRA recipe (max
depth 10, 2-10 arguments per operator, a leaf with probability 0.75 below the maximum
depth, lengths kept within [min_len, max_len]) and writes the release layout:
``listops-1000/basic_{train,val,test}.tsv`` with header ``Source<TAB>Target``.

Tokenisation keeps every symbol, ``]`` included (dropping it is a known bug of some
LRA pipelines); the release files' parentheses carry no information and are skipped.
"""

from __future__ import annotations

import csv
import os
import random

import numpy as np
import tqdm

from experiments.lra.common import DataMissingError, FiniteTask, find_dir, pad_to
from experiments.tasks.base import TaskSpec

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
SPECIALS = ("<pad>", "<unk>", "<eos>")
VOCAB = SPECIALS + tuple(str(d) for d in range(10)) + OPERATORS + (END,)
TOKEN_ID = {tok: i for i, tok in enumerate(VOCAB)}
SPLIT_FILES = {"train": "basic_train.tsv", "val": "basic_val.tsv", "test": "basic_test.tsv"}
DEFAULT_SIZES = {"train": 96_000, "val": 2_000, "test": 2_000}


def generate_tree(rng: random.Random, depth: int = 1, max_depth: int = 10, max_args: int = 10):
    """A random expression as nested lists ``[op, arg, ...]`` or an int leaf."""
    if depth >= max_depth or rng.random() > 0.25:
        return rng.randint(0, 9)
    n_args = rng.randint(2, max_args)
    return [rng.choice(OPERATORS)] + [
        generate_tree(rng, depth + 1, max_depth, max_args) for _ in range(n_args)
    ]


def to_tokens(tree) -> list[str]:
    if isinstance(tree, int):
        return [str(tree)]
    return [tree[0], *(tok for arg in tree[1:] for tok in to_tokens(arg)), END]


def evaluate(tree) -> int:
    if isinstance(tree, int):
        return tree
    op, args = tree[0], [evaluate(a) for a in tree[1:]]
    if op == "[MIN":
        return min(args)
    if op == "[MAX":
        return max(args)
    if op == "[MED":
        return int(np.median(args))
    return sum(args) % 10


def generate(
    n: int, seed: int, min_len: int = 500, max_len: int = 2000, progress: bool = True
) -> list[tuple[str, int]]:
    """``n`` distinct (source, target) pairs with min_len <= tokens <= max_len."""
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    rng = random.Random(seed)
    seen, out = set(), []
    with tqdm.tqdm(total=n, desc="listops", disable=not progress) as bar:
        while len(out) < n:
            tree = generate_tree(rng)
            tokens = to_tokens(tree)
            if not min_len <= len(tokens) <= max_len:
                continue
            source = " ".join(tokens)
            if source in seen:
                continue
            seen.add(source)
            out.append((source, evaluate(tree)))
            bar.update(1)
    return out


def write_release(
    data_dir: str,
    sizes: dict[str, int] | None = None,
    seed: int = 0,
    min_len: int = 500,
    max_len: int = 2000,
    progress: bool = True,
) -> str:
    """Generate and write ``data_dir/listops-1000/basic_*.tsv``; returns that directory."""
    out_dir = os.path.join(data_dir, "listops-1000")
    os.makedirs(out_dir, exist_ok=True)
    sizes = sizes or DEFAULT_SIZES
    examples = generate(sum(sizes.values()), seed, min_len, max_len, progress)
    start = 0
    for split, n in sizes.items():
        path = os.path.join(out_dir, SPLIT_FILES[split])
        with open(path + ".tmp", "w", newline="") as f:
            writer = csv.writer(f, delimiter="\t")
            writer.writerow(["Source", "Target"])
            writer.writerows(examples[start : start + n])
        os.replace(path + ".tmp", path)  # never a half-written split
        start += n
    return out_dir


def tokenize(source: str) -> np.ndarray:
    """Token ids of a source string; parentheses of the release format are skipped."""
    unk = TOKEN_ID["<unk>"]
    return np.asarray(
        [TOKEN_ID.get(tok, unk) for tok in source.split() if tok not in "()"], np.int32
    )


def detokenize(ids) -> str:
    return " ".join(VOCAB[i] for i in ids if i != TOKEN_ID["<pad>"])


def read_split(path: str) -> tuple[list[str], np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if not rows or rows[0][:2] != ["Source", "Target"]:
        raise DataMissingError(
            f"{path}: expected a header 'Source<TAB>Target'; regenerate the file with "
            "`python run.py data listops` or re-copy it from the LRA release"
        )
    sources, targets = [], []
    for line, row in enumerate(rows[1:], start=2):
        try:
            source, target = row[0], int(row[1])
            if not 0 <= target < 10:
                raise ValueError(f"label {target} is not in 0..9")
        except (IndexError, ValueError) as error:
            raise DataMissingError(
                f"{path}, line {line}: not 'expression<TAB>label 0-9' ({error}); "
                "regenerate the file with `python run.py data listops` or re-copy it"
            ) from None
        sources.append(source)
        targets.append(target)
    return sources, np.asarray(targets, np.int32)


class ListOps(FiniteTask):
    """LRA ListOps as a 10-way classification of padded token sequences."""

    def __init__(self, data_dir: str = "data", seq_len: int = 2048):
        self.data_dir, self.seq_len = data_dir, seq_len
        self.spec = TaskSpec(
            "listops", "classify", seq_len=seq_len, vocab_size=len(VOCAB), n_classes=10
        )
        super().__init__(self._read)

    def _read(self, split: str) -> dict[str, np.ndarray]:
        root = find_dir(self.data_dir, "listops-1000", "lra_release/listops-1000")
        if root is None or not os.path.exists(os.path.join(root, SPLIT_FILES[split])):
            raise DataMissingError(
                f"ListOps not found under {self.data_dir!r} (looked for listops-1000/ and "
                "lra_release/listops-1000/). Generate it with `python run.py data listops "
                f"--data_dir {self.data_dir}`, or unpack the LRA release there."
            )
        sources, targets = read_split(os.path.join(root, SPLIT_FILES[split]))
        inputs, mask = pad_to([tokenize(s) for s in sources], self.seq_len)
        return {"inputs": inputs, "mask": mask, "targets": targets}
