"""``python run.py data <task>``: generate or download what an LRA task reads."""

from __future__ import annotations

import os

from experiments.lra import listops, pathfinder
from experiments.lra.listops import ListOps
from experiments.lra.pathfinder import Pathfinder, PathX
from experiments.lra.retrieval import Retrieval
from experiments.lra.tfds_tasks import Image, Text, _tfds

LRA_TASKS = {
    "listops": ListOps,
    "text": Text,
    "retrieval": Retrieval,
    "image": Image,
    "pathfinder": Pathfinder,
    "pathx": PathX,
}
PREPARABLE = ("listops", "listops-small", "pathfinder", "pathx", "text", "image")


def prepare(
    task: str,
    data_dir: str,
    *,
    resolution: int = 32,
    difficulty: str = "curv_contour_length_14",
    n_examples: int | None = None,
) -> str:
    """Make the data of ``task`` under ``data_dir``; returns a sentence saying where."""
    if task == "listops":
        sizes = None if n_examples is None else _split_sizes(n_examples)
        where = listops.write_release(data_dir, sizes)
    elif task == "listops-small":  # LRA-small: shorter expressions, fewer of them
        where = listops.write_release(
            data_dir, _split_sizes(n_examples or 20_000), min_len=30, max_len=250
        )
    elif task in ("pathfinder", "pathx"):
        resolution = 128 if task == "pathx" else resolution
        where = pathfinder.generate(data_dir, n_examples or 200_000, resolution, difficulty)
        grid = pathfinder.save_sample_grid(where)
        return f"{task}: ready in {where} (look at a sample: {grid})"
    elif task in ("text", "image"):
        name = "imdb_reviews" if task == "text" else "cifar10"
        builder = _tfds().builder(name, data_dir=data_dir, file_format="array_record")
        builder.download_and_prepare()
        where = builder.data_dir
    elif task == "retrieval":
        raise ValueError(
            "retrieval reads the LRA release's tsv_data/ (AAN): download "
            "lra_release.gz from the LRA repository and unpack it into "
            f"{os.path.abspath(data_dir)}/"
        )
    else:
        raise ValueError(f"unknown data set {task!r}; valid: {', '.join(PREPARABLE)}")
    return f"{task}: ready in {where}"


def _split_sizes(n: int) -> dict[str, int]:
    n_eval = max(1, n // 20)
    return {"train": n - 2 * n_eval, "val": n_eval, "test": n_eval}
