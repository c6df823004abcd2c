"""Text (byte-level IMDB) and Image (grayscale CIFAR-10) through tensorflow-datasets.

Examples are read with ``tfds.data_source`` (no TensorFlow needed at read time) once,
then cached as ``.npz`` next to the tfds data so that batching is fast and exact.
``python run.py data text`` / ``data image`` download and prepare the tfds data sets
(``pip install tensorflow-datasets``; see requirements-lra.txt).
"""

from __future__ import annotations

import os

import numpy as np

from experiments.lra.common import DataMissingError, FiniteTask, byte_tokens, pad_to
from experiments.tasks.base import TaskSpec

# Our split -> the tfds split (LRA: IMDB's test set doubles as validation).
TEXT_SPLITS = {"train": "train", "val": "test", "test": "test"}
IMAGE_SPLITS = {"train": "train[:90%]", "val": "train[90%:]", "test": "test"}


def _tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataMissingError(
            "this task reads tensorflow-datasets: pip install -r requirements-lra.txt, then "
            "prepare the data with `python run.py data <task> --data_dir <dir>`"
        ) from None
    return tfds


def read_tfds(name: str, split: str, data_dir: str, fields: tuple[str, ...]) -> list[tuple]:
    tfds = _tfds()
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as error:  # noqa: BLE001 - tfds raises many types for "not prepared"
        raise DataMissingError(
            f"tfds data set {name!r} ({split}) is not prepared under {data_dir!r}: run "
            f"`python run.py data {'text' if name == 'imdb_reviews' else 'image'} --data_dir "
            f"{data_dir}` ({type(error).__name__}: {str(error)[:120]})"
        ) from None
    return [tuple(example[f] for f in fields) for example in source]


def _cached(path: str, build):
    if os.path.exists(path):
        with np.load(path) as f:
            return dict(f)
    data = build()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path + ".tmp.npz", **data)
    os.replace(path + ".tmp.npz", path)
    return data


class Text(FiniteTask):
    # LRA's Text has no separate validation set: "val" and "test" are both tfds "test".
    test_is_val = True

    def __init__(self, data_dir: str = "data/tfds", seq_len: int = 4096):
        self.data_dir, self.seq_len = data_dir, seq_len
        self.spec = TaskSpec("text", "classify", seq_len=seq_len, vocab_size=257, n_classes=2)
        super().__init__(self._read)

    def _read(self, split: str):
        tf_split = TEXT_SPLITS[split]

        def build():
            rows = read_tfds("imdb_reviews", tf_split, self.data_dir, ("text", "label"))
            inputs, mask = pad_to([byte_tokens(t) for t, _ in rows], self.seq_len)
            return {
                "inputs": inputs,
                "mask": mask,
                "targets": np.asarray([y for _, y in rows], np.int32),
            }

        cache = os.path.join(self.data_dir, "lra_cache", f"imdb_{tf_split}_{self.seq_len}.npz")
        return _cached(cache, build)


class Image(FiniteTask):
    """Grayscale CIFAR-10 as 1024 pixel values in [0, 1] (features, d_input = 1)."""

    def __init__(self, data_dir: str = "data/tfds"):
        self.data_dir = data_dir
        self.spec = TaskSpec("image", "classify", seq_len=1024, d_input=1, n_classes=10)
        super().__init__(self._read)

    def _read(self, split: str):
        tf_split = IMAGE_SPLITS[split]

        def build():
            rows = read_tfds("cifar10", tf_split, self.data_dir, ("image", "label"))
            rgb = np.stack([np.asarray(im, np.float32) for im, _ in rows])
            gray = rgb @ np.asarray([0.299, 0.587, 0.114], np.float32)  # ITU-R 601 luma
            return {
                "inputs": (gray / 255.0).reshape(len(rows), 1024, 1).astype(np.float32),
                "targets": np.asarray([y for _, y in rows], np.int32),
            }

        name = tf_split.replace("[", "_").replace("]", "").replace(":", "_").replace("%", "")
        return _cached(os.path.join(self.data_dir, "lra_cache", f"cifar10_{name}.npz"), build)
