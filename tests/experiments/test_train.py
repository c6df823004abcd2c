"""The training loop end to end on tiny tasks and models: files, metrics, loss, faults.

``TinyTask`` and ``TinyModel`` (one per batch layout) are shared with the other
tests of ``tests/experiments``.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from configs.base import get_config, override
from experiments import optim
from experiments import train as train_lib
from experiments.logging_utils import read_metrics
from experiments.tasks.base import TaskSpec, rng_for

VOCAB, LENGTH, D_INPUT, CLASSES = 11, 8, 3, 4


class TinyTask:
    """Random batches of each layout; ``poison_step`` puts an inf into that step's inputs."""

    def __init__(self, kind="lm", features=False, poison_step=None):
        self.kind, self.features, self.poison_step = kind, features, poison_step
        self.spec = TaskSpec(
            "tiny_" + kind,
            kind,
            seq_len=LENGTH,
            vocab_size=None if features else VOCAB,
            d_input=D_INPUT if features else None,
            n_classes=None if kind == "lm" else CLASSES,
        )

    def _inputs(self, r, batch_size):
        if self.features:
            return r.normal(size=(batch_size, LENGTH, D_INPUT)).astype(np.float32)
        return r.integers(0, VOCAB, (batch_size, LENGTH)).astype(np.int32)

    def _mask(self, r, batch_size):
        lengths = r.integers(1, LENGTH + 1, batch_size)
        return (np.arange(LENGTH) < lengths[:, None]).astype(np.float32)

    def batch(self, split, step, batch_size, seed):
        r = rng_for(seed, split, step)
        if self.kind == "lm":
            tokens = r.integers(0, VOCAB, (batch_size, LENGTH + 1)).astype(np.int32)
            out = {
                "inputs": tokens[:, :-1],
                "targets": tokens[:, 1:],
                "loss_mask": (r.random((batch_size, LENGTH)) < 0.5).astype(np.float32),
            }
        elif self.kind == "classify":
            out = {"inputs": self._inputs(r, batch_size), "mask": self._mask(r, batch_size)}
        else:
            out = {
                "inputs1": self._inputs(r, batch_size),
                "inputs2": self._inputs(r, batch_size),
                "mask1": self._mask(r, batch_size),
                "mask2": self._mask(r, batch_size),
            }
        if self.kind != "lm":
            out["targets"] = r.integers(0, CLASSES, batch_size).astype(np.int32)
        if step == self.poison_step and split == "train":
            out["inputs"] = out["inputs"].copy()
            out["inputs"][0, 0, 0] = np.inf
        return out

    def eval_steps(self, split, batch_size):
        return 2


class TinyModel(nn.Module):
    """Embed (or project), one Dense + LayerNorm + dropout, then the layout's head."""

    kind: str = "lm"
    features: bool = False

    @nn.compact
    def __call__(self, *inputs, train=False):
        embed = nn.Dense(16) if self.features else nn.Embed(VOCAB, 16)
        hidden, norm = nn.Dense(16), nn.LayerNorm()

        def encode(x):
            h = norm(nn.gelu(hidden(embed(x))))
            return nn.Dropout(0.1)(h, deterministic=not train)

        def pool(h, mask):
            return (h * mask[..., None]).sum(1) / jnp.maximum(mask.sum(1, keepdims=True), 1)

        if self.kind == "lm":
            return nn.Dense(VOCAB)(encode(inputs[0]))
        if self.kind == "classify":
            x, mask = inputs
            return nn.Dense(CLASSES)(pool(encode(x), mask))
        x1, x2, m1, m2 = inputs
        u, v = pool(encode(x1), m1), pool(encode(x2), m2)
        return nn.Dense(CLASSES)(jnp.concatenate([u, v, u * v, u - v], -1))


def tiny_config(**overrides):
    base = {
        "train.steps": 4,
        "train.batch_size": 4,
        "train.warmup_steps": 1,
        "train.log_every": 2,
        "train.eval_every": 2,
        "train.checkpoint_every": 2,
        "train.progress": False,
        "train.tensorboard": False,
    }
    return override(get_config(), {**base, **overrides})


@pytest.mark.parametrize("kind,features", [("lm", False), ("classify", True), ("retrieval", False)])
def test_training_writes_finite_metrics_and_results(tmp_path, kind, features):
    config = tiny_config(**{"train.tensorboard": kind == "lm"})
    results = train_lib.train(
        config, str(tmp_path), model=TinyModel(kind, features), task=TinyTask(kind, features)
    )
    lines = read_metrics(str(tmp_path))
    train_lines = [r for r in lines if "loss" in r]
    eval_lines = [r for r in lines if "eval_loss" in r]
    assert [r["step"] for r in train_lines] == [2, 4]
    assert [r["step"] for r in eval_lines] == [2, 4]
    for r in train_lines:
        for key in ("loss", "accuracy", "grad_norm", "lr", "step_time", "tokens_per_s"):
            assert np.isfinite(r[key]), (key, r)
        assert 0 <= r["accuracy"] <= 1
    # Warmup of one step: lr is 0 at step 0 and at the peak at step 1.
    assert train_lines[0]["lr"] == pytest.approx(config.train.lr / 2, rel=1e-6)

    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert (
        on_disk["final"]["eval_loss"]
        == results["final"]["eval_loss"]
        == eval_lines[-1]["eval_loss"]
    )
    assert on_disk["best"]["eval_loss"] == min(r["eval_loss"] for r in eval_lines)
    assert on_disk["config"]["train"]["steps"] == 4
    n_params = sum(np.size(x) for x in jax.tree.leaves(_init(kind, features)))
    assert on_disk["params"] == n_params
    assert on_disk["wall_time_s"] > 0 and on_disk["steps_per_s"] > 0
    assert json.loads((tmp_path / "config.json").read_text())["arch"] == config.arch
    assert (tmp_path / "checkpoints" / "4").is_dir()
    if kind == "lm":
        assert any(f.startswith("events") for f in os.listdir(tmp_path / "tensorboard"))


def _init(kind, features):
    task = TinyTask(kind, features)
    batch = task.batch("train", 0, 2, 0)
    from experiments.models import model_inputs

    return TinyModel(kind, features).init(jax.random.key(0), *model_inputs(batch, kind))


def _ce_numpy(logits, targets):
    logits = logits.astype(np.float64)
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -np.take_along_axis(logp, targets[..., None], -1)[..., 0]


@pytest.mark.parametrize("kind", ["lm", "classify"])
def test_weighted_sums_match_numpy(kind):
    r = np.random.default_rng(0)
    shape = (5, 6) if kind == "lm" else (5,)
    logits = r.normal(size=shape + (7,)).astype(np.float32)
    targets = r.integers(0, 7, shape).astype(np.int32)
    weight = np.array([1, 0, 1, 1, 0], np.float32)  # examples 1 and 4 only pad the batch
    batch = {"targets": targets, "weight": weight}
    token_w = np.broadcast_to(weight.reshape((5,) + (1,) * (len(shape) - 1)), shape).astype(
        np.float64
    )
    if kind == "lm":
        batch["loss_mask"] = (r.random(shape) < 0.6).astype(np.float32)
        token_w = token_w * batch["loss_mask"]
    ce, correct, total = train_lib.weighted_sums(jnp.asarray(logits), batch, kind)
    np.testing.assert_allclose(ce, (_ce_numpy(logits, targets) * token_w).sum(), rtol=1e-5)
    hits = (logits.argmax(-1) == targets) * token_w
    np.testing.assert_allclose(correct, hits.sum(), rtol=1e-6)
    np.testing.assert_allclose(total, token_w.sum())


def test_bfloat16_compute_keeps_float32_params():
    task, model = TinyTask("lm"), TinyModel("lm")
    batch = task.batch("train", 0, 4, 0)
    out = {}
    for dtype in ("float32", "bfloat16"):
        tc = tiny_config(**{"train.compute_dtype": dtype, "train.warmup_steps": 0}).train
        rules = train_lib.param_rules(model, batch, "lm", tc)
        tx = optim.make_optimizer(tc, rules)
        state = train_lib.create_state(model, tx, batch, jax.random.key(0))
        step = jax.jit(train_lib.make_train_step(model, tx, "lm", tc))
        out[dtype] = step(state, batch)
    (s32, m32), (s16, m16) = out["float32"], out["bfloat16"]
    assert {x.dtype for x in jax.tree.leaves(s16.params)} == {jnp.dtype("float32")}
    # The same step (same dropout mask) at bf16 precision: close to, but not, the f32 loss.
    assert float(m16["loss"]) != float(m32["loss"])
    np.testing.assert_allclose(m16["loss"], m32["loss"], rtol=2e-2)
    for a, b in zip(jax.tree.leaves(s16.params), jax.tree.leaves(s32.params), strict=True):
        np.testing.assert_allclose(a, b, atol=2e-3)  # one Adam step moves each by <= lr


def test_unknown_config_keys_are_refused(tmp_path):
    with pytest.raises(KeyError, match="train.lrr"):
        tiny_config(**{"train.lrr": 1.0})
    with pytest.raises(train_lib.TrainingError, match="train.lrr"):
        train_lib.train({"train": {"lrr": 1.0}}, str(tmp_path), model=TinyModel(), task=TinyTask())
    config = tiny_config()
    config.model.d_state = 4  # model options are free-form (arch.build checks them)
    config.unlock()
    config.train.unlock()
    config.train.lrr = 1.0
    with pytest.raises(train_lib.TrainingError, match="train.lrr"):
        train_lib.train(config, str(tmp_path), model=TinyModel(), task=TinyTask())


def test_mesh_larger_than_the_devices_is_refused(tmp_path):
    config = tiny_config(**{"mesh.data": jax.device_count() + 1})
    with pytest.raises(train_lib.TrainingError, match="mesh.data"):
        train_lib.train(config, str(tmp_path), model=TinyModel(), task=TinyTask())


# ------------------------------------------------- the registered tasks and architectures


def _registry_or_skip():
    try:
        import arch.registry  # noqa: F401  (imports every mixer)
    except ImportError as error:
        pytest.skip(f"the arch registry does not import yet: {error}")


MQAR = {"vocab_size": 16, "seq_len": 16, "num_kv_pairs": 2, "n_eval_steps": 1}


def tiny_mamba_mqar(**overrides):
    """A one-layer Mamba of width 16 on a 16-token MQAR: the smallest registry run."""
    base = {"arch": "mamba", "model.d_model": 16, "model.n_layers": 1, "task.name": "mqar"}
    return tiny_config(**{**base, "task.options": MQAR, **overrides})


def test_config_names_the_task_and_the_architecture(tmp_path):
    _registry_or_skip()
    import arch
    from experiments.models import build_model
    from experiments.tasks.registry import make_task

    config = tiny_mamba_mqar()
    results = train_lib.train(config, str(tmp_path))
    assert np.isfinite(results["final"]["eval_loss"])
    model = build_model(config, make_task("mqar", **MQAR).spec)
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16), jnp.int32))
    assert results["params"] == arch.count_params(variables)


def test_a_causal_task_refuses_a_bidirectional_model_in_one_line(tmp_path):
    _registry_or_skip()
    config = tiny_config(
        **{"arch": "s4d", "model.bidirectional": True, "task.name": "mqar", "task.options": MQAR}
    )
    with pytest.raises(train_lib.TrainingError, match="causal") as caught:
        train_lib.train(config, str(tmp_path))
    assert "\n" not in str(caught.value)


def _test_metrics_numpy(model, params, task, batch_size, seed):
    """Test loss and accuracy recomputed outside the training loop, in NumPy."""
    ce = correct = weight = 0.0
    for step in range(task.eval_steps("test", batch_size)):
        batch = task.batch("test", step, batch_size, seed)
        logits = np.asarray(model.apply({"params": params}, batch["inputs"], batch["mask"]))
        w = batch.get("weight", np.ones(len(batch["targets"]), np.float32))
        ce += float(np.sum(_ce_numpy(logits, batch["targets"]) * w))
        correct += float(np.sum((logits.argmax(-1) == batch["targets"]) * w))
        weight += float(np.sum(w))
    return ce / weight, correct / weight


def _best_params(workdir, step):
    from experiments import checkpoint

    ckpts = checkpoint.Checkpoints(str(workdir / "checkpoints"), keep=2)
    try:
        assert ckpts.best_step() == step
        return ckpts.load(step)["params"]
    finally:
        ckpts.close()


def test_best_carries_the_test_split_evaluated_on_the_best_parameters(tmp_path, monkeypatch):
    """``best`` holds test loss/accuracy of the best-validation checkpoint (the LRA number),
    not of the last parameters: validation is made to improve only at step 4 of 6."""
    real_evaluate, val_losses, splits = train_lib.evaluate, iter([1.0, 0.5, 0.9]), []

    def evaluate(*args, **kwargs):
        out = real_evaluate(*args, **kwargs)
        splits.append(args[-1] if len(args) > 7 else kwargs.get("split", "val"))
        if splits[-1] == "val":
            out["eval_loss"] = next(val_losses)
        return out

    monkeypatch.setattr(train_lib, "evaluate", evaluate)
    config = tiny_config(**{"train.steps": 6, "train.tensorboard": False})
    task, model = TinyTask("classify"), TinyModel("classify")
    best = train_lib.train(config, str(tmp_path), model=model, task=task)["best"]
    assert best["step"] == 4 and best["eval_loss"] == 0.5
    assert splits == ["val", "test", "val", "test", "val"]  # test only on improvement
    loss, accuracy = _test_metrics_numpy(
        model, _best_params(tmp_path, 4), task, 4, config.train.seed
    )
    assert best["test_loss"] == pytest.approx(loss, rel=1e-5)
    assert best["test_accuracy"] == pytest.approx(accuracy)


def test_a_resumed_run_without_test_numbers_scores_its_best_checkpoint(tmp_path):
    from experiments.preemption import Preempted
    from tests.experiments.test_resume import SignalAt

    task, model = TinyTask("classify"), TinyModel("classify")
    config = tiny_config(**{"train.test_at_best": False, "train.tensorboard": False})
    with pytest.raises(Preempted):  # evaluated at step 2 (no test numbers), stopped at 4
        train_lib.train(config, str(tmp_path), model=model, task=SignalAt(3, kind="classify"))
    config = tiny_config(**{"train.tensorboard": False})  # same run, test evaluation on
    best = train_lib.train(config, str(tmp_path), model=model, task=task)["best"]
    assert best["step"] == 2
    loss, accuracy = _test_metrics_numpy(
        model, _best_params(tmp_path, best["step"]), task, 4, config.train.seed
    )
    assert best["test_loss"] == pytest.approx(loss, rel=1e-5)
    assert best["test_accuracy"] == pytest.approx(accuracy)


class _TestIsVal(TinyTask):
    test_is_val = True


def test_a_task_whose_test_split_is_its_validation_split_is_evaluated_once(tmp_path):
    config = tiny_config(**{"train.tensorboard": False})
    best = train_lib.train(
        config, str(tmp_path), model=TinyModel("classify"), task=_TestIsVal("classify")
    )["best"]
    assert best["test_loss"] == best["eval_loss"]
    assert best["test_accuracy"] == best["eval_accuracy"]


def test_time_chunked_training_matches_one_call(tmp_path, monkeypatch):
    """``train.time_chunk``: the same losses as training on whole sequences, and the
    train and eval steps do go through the chunks (traced once each), the train step
    with ``train.time_chunk_recompute``."""
    _registry_or_skip()
    from arch import time_chunks

    calls = []
    chunked = time_chunks.apply_in_time_chunks
    monkeypatch.setattr(
        time_chunks,
        "apply_in_time_chunks",
        lambda *a, **k: calls.append((a[3], k.get("recompute"))) or chunked(*a, **k),
    )
    monkeypatch.setattr(train_lib.models, "apply_in_time_chunks", time_chunks.apply_in_time_chunks)
    losses = {}
    for chunk in (0, 4):
        config = tiny_mamba_mqar(**{"train.time_chunk": chunk, "train.time_chunk_recompute": "all"})
        train_lib.train(config, str(tmp_path / str(chunk)))
        losses[chunk] = [
            (m["step"], m[key])
            for m in read_metrics(str(tmp_path / str(chunk)))
            for key in ("loss", "eval_loss")
            if key in m
        ]
    # the train step recomputes as configured; evaluation has no backward to save for
    assert set(calls) == {(4, "all"), (4, None)}
    assert len(losses[4]) >= 4
    steps, values = zip(*losses[4], strict=True)
    assert steps == tuple(s for s, _ in losses[0])
    np.testing.assert_allclose(values, [v for _, v in losses[0]], rtol=1e-4)


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"model.dropout": 0.1}, "model.dropout=0.1"),
        (
            {"arch": "transformer", "model.channel_options": {"dropout": 0.2}},
            "model.channel_options.dropout=0.2",
        ),
        (
            {"arch": "moe_mamba", "model.channel_options": {"capacity_factor": 1.0}},
            "its own MoE capacity",
        ),
        ({"arch": "s4d", "model.bidirectional": True}, "recurrent form|causal"),
        ({"train.time_chunk": -1}, "int >= 0"),
        ({"train.time_chunk_recompute": "some"}, r"'some' is not one of \['all', 'dots', 'none'\]"),
    ],
)
def test_time_chunk_refusals_name_the_fix(tmp_path, overrides, message):
    _registry_or_skip()
    config = tiny_mamba_mqar(**{"train.time_chunk": 4, **overrides})
    with pytest.raises(train_lib.TrainingError, match=message) as caught:
        train_lib.train(config, str(tmp_path))
    assert "\n" not in str(caught.value)
    assert not os.listdir(tmp_path)  # refused before anything was written


def test_time_chunk_refuses_a_classification_task(tmp_path):
    config = tiny_config(**{"train.time_chunk": 4})
    with pytest.raises(train_lib.TrainingError, match="language models only") as caught:
        train_lib.train(
            config,
            str(tmp_path),
            model=TinyModel("classify", True),
            task=TinyTask("classify", True),
        )
    assert "\n" not in str(caught.value)


def test_time_chunk_refuses_a_model_without_the_mixer_protocol(tmp_path):
    config = tiny_config(**{"train.time_chunk": 4})
    with pytest.raises(train_lib.TrainingError, match="needs a model with init_state"):
        train_lib.train(config, str(tmp_path), model=TinyModel("lm"), task=TinyTask("lm"))
    assert not os.listdir(tmp_path)
