"""LRA data: generators checked by independent re-derivations, readers on fixtures."""

import csv
import os

import numpy as np
import pytest

from experiments.lra import listops, pathfinder
from experiments.lra.common import DataMissingError
from experiments.lra.prepare import LRA_TASKS, prepare
from experiments.lra.retrieval import Retrieval


def stack_machine(source: str) -> int:
    """An independent ListOps evaluator: one pass over the tokens with a stack."""
    stack = []
    for tok in source.split():
        if tok in "()":
            continue
        if tok.startswith("["):
            stack.append([tok])
        elif tok == "]":
            op, *args = stack.pop()
            value = {
                "[MIN": min(args),
                "[MAX": max(args),
                "[SM": sum(args) % 10,
                "[MED": int(
                    sorted(args)[len(args) // 2]
                    if len(args) % 2
                    else (sorted(args)[len(args) // 2 - 1] + sorted(args)[len(args) // 2]) / 2
                ),
            }[op]
            if stack:
                stack[-1].append(value)
            else:
                return value
        else:
            stack[-1].append(int(tok)) if stack else stack.append(int(tok))
    return stack[0] if isinstance(stack[0], int) else stack[0]


def test_listops_labels_lengths_and_operators():
    examples = listops.generate(300, seed=1, min_len=20, max_len=200, progress=False)
    assert len({s for s, _ in examples}) == 300
    ops = {op: 0 for op in listops.OPERATORS}
    for source, target in examples:
        assert stack_machine(source) == target
        tokens = source.split()
        assert 20 <= len(tokens) <= 200
        assert tokens.count("]") == sum(tokens.count(op) for op in listops.OPERATORS)
        for op in ops:
            ops[op] += tokens.count(op)
    counts = np.asarray(list(ops.values()))
    assert counts.min() > 0.15 * counts.sum()  # the four operators are drawn uniformly
    labels = np.asarray([t for _, t in examples])
    assert len(set(labels.tolist())) >= 8


def test_listops_tokenization_round_trips_and_keeps_brackets():
    source = "[MAX 2 9 [MIN 4 7 ] 0 ]"
    ids = listops.tokenize(source)
    assert listops.detokenize(ids) == source
    assert (ids == listops.TOKEN_ID["]"]).sum() == 2
    # The release's parenthesised form tokenises to the same ids.
    assert (listops.tokenize("( ( [MAX 2 9 ) [MIN 4 7 ] ) 0 ]") == ids).all()


def test_listops_release_layout_and_task(tmp_path):
    root = listops.write_release(
        str(tmp_path),
        {"train": 20, "val": 5, "test": 5},
        seed=0,
        min_len=10,
        max_len=60,
        progress=False,
    )
    with open(os.path.join(root, "basic_val.tsv")) as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == ["Source", "Target"] and len(rows) == 6
    task = LRA_TASKS["listops"](data_dir=str(tmp_path), seq_len=64)
    batch = task.batch("val", 1, 4, seed=0)  # examples 4..7 of 5: two are padding
    np.testing.assert_array_equal(batch["weight"], [1, 0, 0, 0])
    assert batch["inputs"].shape == (4, 64) and batch["inputs"].dtype == np.int32
    assert listops.detokenize(batch["inputs"][0]) == rows[5][0]
    assert batch["targets"][0] == int(rows[5][1])
    assert task.eval_steps("val", 4) == 2
    a, b = task.batch("train", 7, 8, seed=3), task.batch("train", 7, 8, seed=3)
    np.testing.assert_array_equal(a["inputs"], b["inputs"])  # a pure function of the step
    epoch = np.concatenate([task.batch("train", s, 4, seed=3)["targets"] for s in range(5)])
    assert sorted(epoch.tolist()) == sorted(read_targets(root, "basic_train.tsv"))


def read_targets(root, name):
    with open(os.path.join(root, name)) as f:
        return [int(r[1]) for r in list(csv.reader(f, delimiter="\t"))[1:]]


def flood_connected(image: np.ndarray, start, goal) -> bool:
    """Breadth-first flood fill over lit pixels (8-neighbours) from one marker."""
    on = image > 127
    seen = {tuple(start)}
    frontier = [tuple(start)]
    while frontier:
        y, x = frontier.pop()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                p = (y + dy, x + dx)
                inside = 0 <= p[0] < on.shape[0] and 0 <= p[1] < on.shape[1]
                if inside and on[p] and p not in seen:
                    seen.add(p)
                    frontier.append(p)
    return tuple(goal) in seen


@pytest.mark.parametrize(
    "size,difficulty",
    [(32, "curv_baseline"), (32, "curv_contour_length_14"), (128, "curv_contour_length_14")],
)
def test_pathfinder_labels_are_marker_connectivity(size, difficulty):
    rng = np.random.default_rng(size)
    for i in range(60 if size == 32 else 12):
        image, label, (m1, m2) = pathfinder.make_image(
            rng, size, pathfinder.DIFFICULTIES[difficulty], label=i % 2, return_markers=True
        )
        assert image.shape == (size, size) and image.dtype == np.uint8
        assert image[m1] == image[m2] == 255
        assert flood_connected(image, m1, m2) == bool(label)


def _contour_step_by_step(rng, size, n_paddles, paddle, thickness, max_turn=np.pi / 5):
    """The contour recipe as a plain loop: one disc per small step (the test's reference)."""
    margin = paddle + 2
    y, x = rng.uniform(margin, size - margin, 2)
    start, heading = (y, x), rng.uniform(0, 2 * np.pi)
    turns = rng.uniform(-max_turn, max_turn, n_paddles)
    canvas, sub, r = np.zeros((size, size), bool), int(4 * paddle), max(thickness, 0.5)
    k = int(np.ceil(r))
    for turn in turns:
        heading += turn
        for _ in range(sub):
            y += np.sin(heading) * paddle / sub
            x += np.cos(heading) * paddle / sub
            if not (1 <= y < size - 1 and 1 <= x < size - 1):
                return None
            cy, cx = round(y), round(x)
            for py in range(cy - k, cy + k + 1):
                for px in range(cx - k, cx + k + 1):
                    inside = 0 <= py < size and 0 <= px < size
                    if inside and (py - cy) ** 2 + (px - cx) ** 2 <= r * r:
                        canvas[py, px] = True
    return canvas, start, (y, x)


def test_pathfinder_contour_matches_the_step_by_step_reference():
    drawn = 0
    for seed in range(40):
        got = pathfinder._contour(np.random.default_rng(seed), 32, 14, 2.0, 0.5)
        want = _contour_step_by_step(np.random.default_rng(seed), 32, 14, 2.0, 0.5)
        assert (got is None) == (want is None), seed
        if got is not None:
            drawn += 1
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_allclose(got[1], want[1])
            np.testing.assert_allclose(got[2], want[2], atol=1e-9)
    assert drawn >= 5  # enough contours stay inside the image to compare


def test_pathfinder_release_layout(tmp_path):
    root = pathfinder.generate(
        str(tmp_path), 10, resolution=32, difficulty="curv_baseline", workers=1, progress=False
    )
    open(os.path.join(root, "imgs", "0", "sample_3.png"), "wb").close()  # like the release
    paths, labels = pathfinder.read_release(root)
    assert len(paths) == 9 and not any(p.endswith("sample_3.png") for p in paths)
    assert abs(labels.mean() - 0.5) < 0.2
    task = LRA_TASKS["pathfinder"](data_dir=str(tmp_path), difficulty="curv_baseline")
    batch = task.batch("train", 0, 4, seed=0)
    assert batch["inputs"].shape == (4, 1024, 1) and batch["inputs"].max() <= 1.0
    assert task.spec.d_input == 1 and task.spec.n_classes == 2


def test_pathfinder_data_command_writes_a_sample_grid_and_caches(tmp_path, monkeypatch):
    from experiments.lra.prepare import prepare

    message = prepare("pathfinder", str(tmp_path), difficulty="curv_baseline", n_examples=6)
    grid = os.path.join(str(tmp_path), "pathfinder32", "curv_baseline", "samples.png")
    assert grid in message
    from PIL import Image

    pixels = np.asarray(Image.open(grid).convert("L"))
    assert pixels.shape[1] > 200 and pixels.std() > 10  # a rendered figure, not blank

    def no_new_images(*args, **kwargs):
        raise AssertionError("a finished folder was generated again")

    monkeypatch.setattr(pathfinder, "make_image", no_new_images)
    prepare("pathfinder", str(tmp_path), difficulty="curv_baseline", n_examples=6)  # cached
    os.remove(os.path.join(os.path.dirname(grid), "imgs", "0", "sample_5.png"))
    with pytest.raises(AssertionError, match="generated again"):  # incomplete: redone
        prepare("pathfinder", str(tmp_path), difficulty="curv_baseline", n_examples=6)


def test_retrieval_reads_the_aan_tsv(tmp_path):
    tsv = tmp_path / "tsv_data"
    tsv.mkdir()
    for name in ("train", "eval", "test"):
        with open(tsv / f"new_aan_pairs.{name}.tsv", "w") as f:
            f.write("1\tp1\tp2\tabc\tde\n0.0\tp3\tp4\tx\tyz\n")
    task = Retrieval(data_dir=str(tmp_path), seq_len=4)
    batch = task.batch("val", 0, 2, seed=0)
    np.testing.assert_array_equal(batch["targets"], [1, 0])
    np.testing.assert_array_equal(
        batch["inputs1"][0], [ord("a") + 1, ord("b") + 1, ord("c") + 1, 0]
    )
    np.testing.assert_array_equal(batch["mask2"][1], [1, 1, 0, 0])


@pytest.mark.parametrize(
    "task, command",
    [
        ("listops", "python run.py data listops"),
        ("pathfinder", "python run.py data pathfinder"),
        ("retrieval", "lra_release"),
        ("pathx", "--resolution 128"),
    ],
)
def test_missing_data_names_the_fix(task, command, tmp_path):
    with pytest.raises(DataMissingError, match=command):
        LRA_TASKS[task](data_dir=str(tmp_path)).batch("train", 0, 2, seed=0)


def test_tfds_tasks_need_tfds_or_say_so(tmp_path):
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        with pytest.raises(DataMissingError, match="tensorflow-datasets"):
            LRA_TASKS["text"](data_dir=str(tmp_path)).batch("train", 0, 2, seed=0)
        pytest.skip(
            "tensorflow-datasets not installed (requirements-lra.txt): the "
            "mock_data loader test needs it"
        )
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        raw_images = list(tfds.data_source("cifar10", split="test", data_dir=str(tmp_path)))
        raw_texts = list(tfds.data_source("imdb_reviews", split="test", data_dir=str(tmp_path)))
        image = LRA_TASKS["image"](data_dir=str(tmp_path))
        text = LRA_TASKS["text"](data_dir=str(tmp_path), seq_len=64)
        image_batch = image.batch("test", 0, 4, seed=0)  # eval splits: examples in order
        text_batch = text.batch("val", 0, 4, seed=0)  # IMDB's test set doubles as val
        train = [image.batch("train", 1, 3, seed=5)["inputs"] for _ in range(2)]
    # Image: grayscale by the ITU-R 601 luma weights, 1024 steps of one feature in [0, 1].
    assert image_batch["inputs"].shape == (4, 1024, 1)
    for i in range(4):
        rgb = np.asarray(raw_images[i]["image"], np.float64)
        luma = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
        np.testing.assert_allclose(image_batch["inputs"][i, :, 0], luma.ravel() / 255, atol=1e-5)
        assert image_batch["targets"][i] == raw_images[i]["label"]
    # Text: bytes + 1 (0 pads), truncated to seq_len, the mask marking real bytes.
    assert text_batch["inputs"].shape == (4, 64)
    for i in range(4):
        data = raw_texts[i]["text"]
        data = data.encode() if isinstance(data, str) else data
        expect = np.frombuffer(data, np.uint8)[:64].astype(np.int32) + 1
        n = len(expect)
        np.testing.assert_array_equal(text_batch["inputs"][i, :n], expect)
        assert (text_batch["inputs"][i, n:] == 0).all()
        assert text_batch["mask"][i].sum() == n
        assert text_batch["targets"][i] == raw_texts[i]["label"]
    np.testing.assert_array_equal(train[0], train[1])  # a pure function of (seed, step)


def test_prepare_small_listops(tmp_path):
    message = prepare("listops-small", str(tmp_path), n_examples=40)
    assert "listops-small: ready" in message
    task = LRA_TASKS["listops"](data_dir=str(tmp_path), seq_len=512)
    assert task.size("train") == 36
    with pytest.raises(ValueError, match="unknown data set"):
        prepare("imagenet", str(tmp_path))


def test_lra_transformer_recipe_trains_through_the_loop(tmp_path):
    """The LRA paper's Transformer (CLS, sinusoidal positions, attention dropout, rsqrt
    schedule, decay on every parameter) trains on generated ListOps: finite metrics."""
    import json

    from configs.base import override
    from configs.lra import listops as listops_config
    from experiments import train as train_lib

    prepare("listops-small", str(tmp_path / "data"), n_examples=40)
    config = override(
        listops_config.get_config("transformer,smoke"),
        {
            "task.options.data_dir": str(tmp_path / "data"),
            "task.options.seq_len": 128,
            "train.steps": 4,
            "train.eval_every": 4,
            "train.checkpoint_every": 4,
            "train.eval_steps": 1,
            "train.progress": False,
            "train.tensorboard": False,
        },
    )
    train_lib.train(config, str(tmp_path / "run"))
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    train_rows = [r for r in rows if "loss" in r]
    assert train_rows and all(np.isfinite(r["loss"]) for r in train_rows)
    assert any(np.isfinite(r.get("eval_loss", np.nan)) for r in rows)
    # The rsqrt schedule (warmup 4 in smoke), averaged over the logged steps 0..3.
    expected = np.mean([0.05 * min(1, s / 4) / np.sqrt(max(s, 4)) for s in range(4)])
    np.testing.assert_allclose(train_rows[-1]["lr"], expected, rtol=1e-5)
