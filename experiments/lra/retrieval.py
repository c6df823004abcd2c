"""Retrieval (LRA): do two ACL Anthology papers cite each other? (AAN, byte level).

Reads the release TSVs ``tsv_data/new_aan_pairs.{train,eval,test}.tsv`` (no header:
label, id1, id2, text1, text2) and yields "retrieval" batches for the dual encoder.
"""

from __future__ import annotations

import csv
import os
import sys

import numpy as np

from experiments.lra.common import DataMissingError, FiniteTask, byte_tokens, find_dir, pad_to
from experiments.tasks.base import TaskSpec

FILES = {
    "train": "new_aan_pairs.train.tsv",
    "val": "new_aan_pairs.eval.tsv",
    "test": "new_aan_pairs.test.tsv",
}


def read_tsv(path: str):
    csv.field_size_limit(sys.maxsize)  # documents are long
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f, delimiter="\t") if len(r) >= 5]
    labels = np.asarray([int(float(r[0])) for r in rows], np.int32)
    return labels, [r[3] for r in rows], [r[4] for r in rows]


class Retrieval(FiniteTask):
    def __init__(self, data_dir: str = "data", seq_len: int = 4000):
        self.data_dir, self.seq_len = data_dir, seq_len
        self.spec = TaskSpec("retrieval", "retrieval", seq_len=seq_len, vocab_size=257, n_classes=2)
        super().__init__(self._read)

    def _read(self, split: str):
        root = find_dir(self.data_dir, "tsv_data", "lra_release/tsv_data")
        if root is None or not os.path.exists(os.path.join(root, FILES[split])):
            raise DataMissingError(
                f"AAN retrieval TSVs not found under {self.data_dir!r}: put the LRA release's "
                f"tsv_data/ ({', '.join(FILES.values())}) in {self.data_dir}/ or "
                f"{self.data_dir}/lra_release/ (the release is lra_release.gz from the LRA repo)."
            )
        labels, text1, text2 = read_tsv(os.path.join(root, FILES[split]))
        in1, m1 = pad_to([byte_tokens(t) for t in text1], self.seq_len)
        in2, m2 = pad_to([byte_tokens(t) for t in text2], self.seq_len)
        return {"inputs1": in1, "inputs2": in2, "mask1": m1, "mask2": m2, "targets": labels}
