"""One real training step for every (architecture x synthetic task), at tiny size.

Goes through the public ``experiments.train.train`` so that config -> task -> model ->
loop -> results.json is exercised for each pair, not just the model.
"""

import math

import pytest

import arch
from configs.base import get_config
from experiments.train import train

TINY_TASKS = {
    "mqar": {"vocab_size": 16, "seq_len": 16, "num_kv_pairs": 2},
    "selective_copy": {"vocab_size": 4, "seq_len": 16, "n_tokens": 3},
    "induction_heads": {"vocab_size": 4, "seq_len": 12},
    "passkey": {"seq_len": 96, "n_digits": 2},
}
LRA_OPTIONS = {
    "listops": {"seq_len": 32},
    "pathfinder": {"difficulty": "curv_baseline"},
    "retrieval": {"seq_len": 16},
}


def pairs(archs, tasks, offset=0):
    """Every (arch, task); all but one task per architecture are marked slow.

    Architecture i runs task ``(i + offset) % n`` by default, where the synthetic tasks
    are 0..3 and the LRA ones 4..6 (``offset=len(TINY_TASKS)``): every architecture
    trains once and every task runs at least once in the default (CI) run; RUN_SLOW=1
    runs the full cross product.
    """
    n_all = len(TINY_TASKS) + len(LRA_OPTIONS)
    out = []
    for i, arch_name in enumerate(archs):
        for j, task in enumerate(tasks):
            covered = (i % n_all) == j + offset
            marks = () if covered else (pytest.mark.slow,)
            out.append(pytest.param(arch_name, task, marks=marks, id=f"{arch_name}-{task}"))
    return out


def tiny_config(arch_name, task, options):
    config = get_config()
    config.arch = arch_name
    config.model.d_model = 16
    config.model.n_layers = 1
    config.task.name = task
    for key, value in options.items():
        config.task.options[key] = value
    config.train.steps = 1
    config.train.batch_size = 2
    config.train.eval_steps = 1
    config.train.progress = False
    config.train.tensorboard = False
    return config


@pytest.mark.parametrize("arch_name, task", pairs(sorted(arch.ARCHS), sorted(TINY_TASKS)))
def test_one_training_step(arch_name, task, tmp_path):
    results = train(tiny_config(arch_name, task, TINY_TASKS[task]), str(tmp_path))
    final = results["final"]
    assert math.isfinite(final["loss"]) and math.isfinite(final["eval_loss"])
    assert 0.0 <= final["eval_accuracy"] <= 1.0
    assert results["params"] > 0


@pytest.fixture(scope="module")
def lra_data(tmp_path_factory):
    """Tiny ListOps, Pathfinder-32 and AAN data in the release layouts."""
    from experiments.lra import listops, pathfinder

    root = tmp_path_factory.mktemp("lra")
    listops.write_release(
        str(root), {"train": 8, "val": 4, "test": 4}, min_len=5, max_len=30, progress=False
    )
    pathfinder.generate(
        str(root), 10, resolution=32, difficulty="curv_baseline", workers=1, progress=False
    )
    (root / "tsv_data").mkdir()
    for name in ("train", "eval", "test"):
        with open(root / "tsv_data" / f"new_aan_pairs.{name}.tsv", "w") as f:
            f.write("1\ta\tb\tsome text\tother text\n0\tc\td\tmore\twords here\n")
    return str(root)


@pytest.mark.parametrize(
    "arch_name, task", pairs(sorted(arch.ARCHS), sorted(LRA_OPTIONS), offset=len(TINY_TASKS))
)
def test_one_lra_training_step(arch_name, task, lra_data, tmp_path):
    config = tiny_config(arch_name, task, {"data_dir": lra_data, **LRA_OPTIONS[task]})
    config.model.bidirectional = arch.ARCHS[arch_name].bidirectional_ok
    results = train(config, str(tmp_path))
    final = results["final"]
    assert math.isfinite(final["loss"]) and math.isfinite(final["eval_loss"])
    assert 0.0 <= final["eval_accuracy"] <= 1.0
