"""The one training loop: every architecture, every task.

``train(config, workdir)`` builds the task and the model, then runs a jitted
``train_step(state, batch) -> (state, metrics)`` data-parallel over the mesh, with
periodic evaluation, metric logging and checkpoints. It resumes from the latest
checkpoint in ``workdir``: batches are a pure function of (seed, step), so a resumed
run sees exactly the batches an uninterrupted one would. Nothing here is
architecture-specific; the model is only ``init`` and ``apply``.

Files in ``workdir``: ``config.json``, ``metrics.jsonl``, ``tensorboard/``,
``checkpoints/``, and at the end ``results.json``; what a finished run wrote is never
overwritten, and a changed config stops before anything is touched
(``experiments/rundir.py``). SIGTERM/SIGINT save a checkpoint at the current step and
raise ``preemption.Preempted`` (``experiments/preemption.py``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from arch.protocol import NoRecurrentFormError
from arch.time_chunks import RECOMPUTE
from experiments import checkpoint, logging_utils, models, optim, parallel, preemption, rundir

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
FEATURE_KEYS = ("inputs", "inputs1", "inputs2")


class TrainingError(ValueError):
    """A fault the user can fix (bad config, diverged run, unusable checkpoints)."""


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # optimizer steps done; the next batch is batch(step)
    params: Any
    opt_state: Any
    first_bad_step: jax.Array  # -1, or the first step with a non-finite loss or gradient


def create_state(model, tx, example, key, kind: str | None = None) -> TrainState:
    """Step 0: parameters initialised from ``key`` on ``example``'s shapes."""
    params = models.init_params(model, example, key, kind)
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), -jnp.ones((), jnp.int32))


def param_rules(model, example, kind: str, train_cfg):
    """The optimizer rule of every parameter: declared by the modules ``model`` builds,
    refined by ``train.lr_mults`` / ``train.wd_mults``."""
    from arch.params import param_rules as collect  # deferred: arch imports every mixer

    try:
        return collect(
            model,
            *models.model_inputs(example, kind),
            lr_mults=train_cfg.lr_mults,
            wd_mults=train_cfg.wd_mults,
        )
    except (TypeError, ValueError) as error:
        raise TrainingError(str(error)) from None


# ---------------------------------------------------------------------------- config


def resolve_config(config) -> ml_collections.ConfigDict:
    """A full config from a ConfigDict or a nested dict of overrides of the base config.

    Unknown keys are a ``TrainingError`` (``model`` and ``task.options`` are free-form).
    """
    from experiments import config as base

    if isinstance(config, Mapping):
        try:
            return base.override(base.get_config(), rundir.flatten(config))
        except KeyError as error:
            raise TrainingError(error.args[0]) from None
    unknown = base.unknown_keys(config, base.get_config())
    if unknown:
        raise TrainingError(
            f"unknown config key(s) {', '.join(unknown)}; see experiments/config.py for the fields"
        )
    return config


def _check_train_config(tc) -> None:
    if tc.compute_dtype not in COMPUTE_DTYPES:
        raise TrainingError(
            f"train.compute_dtype={tc.compute_dtype!r}; valid: {', '.join(COMPUTE_DTYPES)}"
        )
    for name in (
        "steps",
        "batch_size",
        "log_every",
        "eval_every",
        "checkpoint_every",
        "keep_checkpoints",
    ):
        if tc[name] < 1:
            raise TrainingError(f"train.{name}={tc[name]} must be at least 1")
    if tc.eval_steps is not None and tc.eval_steps < 1:
        raise TrainingError(f"train.eval_steps={tc.eval_steps} must be at least 1 (or None)")
    if not isinstance(tc.time_chunk, int) or tc.time_chunk < 0:
        raise TrainingError(f"train.time_chunk={tc.time_chunk!r} must be an int >= 0 (0: off)")
    if tc.time_chunk_recompute not in RECOMPUTE:
        raise TrainingError(
            f"train.time_chunk_recompute={tc.time_chunk_recompute!r} is not one of "
            f"{sorted(RECOMPUTE)} (what each time chunk keeps for the backward)"
        )


def _check_time_chunk(config, model, spec) -> None:
    """``train.time_chunk`` needs a causal LM with a recurrent form, no dropout (``prefill``
    is deterministic) and no MoE capacity (a capacity per chunk would drop other tokens
    than one per batch: other numbers)."""
    chunk = config.train.time_chunk
    if not chunk:
        return
    if spec.kind != "lm":
        raise TrainingError(
            f"train.time_chunk={chunk} applies to language models only; the task "
            f"{spec.name!r} is {spec.kind!r}: set train.time_chunk=0"
        )
    found = {k: v for k, v in rundir.flatten(config.model.to_dict()).items() if v}
    dropouts = {k: v for k, v in found.items() if k.rsplit(".", 1)[-1].endswith("dropout")}
    if dropouts:
        shown = ", ".join(f"model.{k}={v}" for k, v in dropouts.items())
        raise TrainingError(
            f"train.time_chunk={chunk} runs the model through its recurrent form, which "
            f"has no dropout; {shown}: set it to 0 or train.time_chunk=0"
        )
    capacity = {k: v for k, v in found.items() if k.endswith("capacity_factor")}
    if capacity:
        shown = ", ".join(f"model.{k}={v}" for k, v in capacity.items())
        raise TrainingError(
            f"train.time_chunk={chunk} would give each chunk its own MoE capacity and drop "
            f"other tokens than whole sequences do; {shown}: set it to None or "
            "train.time_chunk=0"
        )
    if not (hasattr(model, "init_state") and hasattr(model, "prefill")):
        raise TrainingError(
            f"train.time_chunk={chunk} needs a model with init_state and prefill (the mixer "
            "protocol, arch/protocol.py); set train.time_chunk=0"
        )
    try:
        jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), 1, method="init_state"))
    except NoRecurrentFormError as error:
        raise TrainingError(
            f"train.time_chunk={chunk} needs the model's recurrent form: {error}; set "
            "train.time_chunk=0"
        ) from None


# ---------------------------------------------------------------------------- loss


def weighted_sums(logits: jax.Array, batch: dict[str, jax.Array], kind: str):
    """Sums of cross-entropy and of correct predictions, and the total weight.

    "lm": per token, weighted by ``loss_mask``; classify/retrieval: per example. An
    optional per-example ``weight`` (0 for padding examples) multiplies either.
    """
    targets = batch["targets"]
    logits = logits.astype(jnp.float32)
    if kind == "lm":
        weights = batch.get("loss_mask", jnp.ones(targets.shape, jnp.float32))
    else:
        weights = jnp.ones(targets.shape, jnp.float32)
    if "weight" in batch:
        example_weight = batch["weight"].astype(jnp.float32)
        weights = weights * example_weight.reshape(example_weight.shape + (1,) * (targets.ndim - 1))
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    return (ce * weights).sum(), (correct * weights).sum(), weights.sum()


def _cast_for_compute(tree, dtype):
    def cast(x):
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree.map(cast, tree)


def _cast_batch(batch, dtype):
    return {k: _cast_for_compute(v, dtype) if k in FEATURE_KEYS else v for k, v in batch.items()}


# ---------------------------------------------------------------------------- steps


def moe_metrics(aux, stats) -> dict:
    """The logged MoE diagnostics: the auxiliary loss (also in the optimised loss; ``loss``
    stays the cross-entropy), the busiest expert's share of the tokens (1 / n_experts when
    balanced) and the share of dropped assignments, over the MoE layers; none without."""
    fractions = [f for k, f in _leaves_named(stats, "expert_fraction")]
    if not fractions:
        return {}
    dropped = [d for k, d in _leaves_named(stats, "dropped")]
    return {
        "moe_aux_loss": aux,
        "moe_max_expert_fraction": jnp.mean(jnp.stack([f.max() for f in fractions])),
        "moe_dropped": jnp.mean(jnp.stack(dropped)),
    }


def _leaves_named(tree, name: str):
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [
        (path, leaf) for path, leaf in flat if any(getattr(p, "key", None) == name for p in path)
    ]


def make_train_step(model, tx, kind: str, train_cfg):
    """``train_step(state, batch) -> (state, metrics)``, pure; jit it with donation."""
    lr_schedule = optim.main_schedule(train_cfg)
    dtype = COMPUTE_DTYPES[train_cfg.compute_dtype]
    seed = int(train_cfg.seed)

    def train_step(state: TrainState, batch):
        dropout = jax.random.fold_in(jax.random.key(seed), state.step)

        def loss_fn(params):
            logits, aux, stats = models.apply_with_aux(
                model,
                _cast_for_compute(params, dtype),  # the cast's gradient lands on f32 params
                _cast_batch(batch, dtype),
                train=True,
                rngs={"dropout": dropout},
                kind=kind,
                time_chunk=train_cfg.time_chunk,
                recompute=train_cfg.time_chunk_recompute,
            )
            ce, correct, weight = weighted_sums(logits, batch, kind)
            weight = jnp.maximum(weight, 1e-9)
            return ce / weight + aux, (ce / weight, correct / weight, aux, stats)

        (_, (loss, accuracy, aux, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params
        )
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        first_bad = jnp.where(
            (state.first_bad_step < 0) & ~finite, state.step, state.first_bad_step
        )
        metrics = {
            "loss": loss,
            "accuracy": accuracy,
            "grad_norm": grad_norm,
            "lr": lr_schedule(state.step),
            **moe_metrics(aux, stats),
        }
        return TrainState(state.step + 1, params, opt_state, first_bad), metrics

    return train_step


def make_eval_step(model, kind: str, train_cfg):
    """``eval_step(params, batch) -> (ce_sum, correct_sum, weight_sum)``."""
    dtype = COMPUTE_DTYPES[train_cfg.compute_dtype]

    def eval_step(params, batch):
        logits = models.apply_model(
            model,
            _cast_for_compute(params, dtype),
            _cast_batch(batch, dtype),
            kind=kind,
            time_chunk=train_cfg.time_chunk,
        )
        return weighted_sums(logits, batch, kind)

    return eval_step


def evaluate(
    eval_step, params, task, n_steps: int, batch_size: int, seed: int, sharding, split="val"
):
    """Weighted mean loss and accuracy over the first ``n_steps`` batches of ``split``.

    Keys are ``eval_loss`` / ``eval_accuracy`` for "val", ``test_loss`` / ... for "test",
    plus whatever the task's optional ``eval_metrics(metrics)`` derives from them.
    """
    totals = None
    for step in range(n_steps):
        batch = parallel.put_batch(task.batch(split, step, batch_size, seed), sharding)
        sums = eval_step(params, batch)
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    ce, correct, weight = (float(x) for x in jax.device_get(totals))
    weight = max(weight, 1e-9)
    prefix = "eval" if split == "val" else split
    metrics = {f"{prefix}_loss": ce / weight, f"{prefix}_accuracy": correct / weight}
    # A task may derive more from these (the lm task: perplexity and bits per byte).
    derive = getattr(task, "eval_metrics", None)
    return metrics | (derive(metrics) if derive is not None else {})


# ---------------------------------------------------------------------------- loop


def _make_task(config):
    from experiments.tasks.registry import make_task  # deferred: loads data modules

    return make_task(config.task.name, **dict(config.task.options))


def read_results(workdir: str) -> dict:
    """The ``results.json`` a finished run wrote in ``workdir``."""
    return rundir.read_json(os.path.join(workdir, rundir.RESULTS))


def train(config, workdir: str, *, model=None, task=None) -> dict:
    """Train (or resume) in ``workdir``; returns the contents of ``results.json``.

    ``model`` / ``task`` replace the ones the config names (e.g. a new cell from a
    notebook). User-facing faults raise ``TrainingError``.
    """
    wall_start = time.perf_counter()
    config = resolve_config(config)
    tc = config.train
    _check_train_config(tc)
    parallel.init_distributed(config.distributed)
    task = _make_task(config) if task is None else task
    spec = task.spec
    if model is None:
        try:
            model = models.build_model(config, spec)
        except ValueError as error:
            raise TrainingError(
                f"cannot build {config.arch!r} for task {spec.name!r}: {error}"
            ) from None
    _check_time_chunk(config, model, spec)
    try:
        mesh = parallel.make_mesh(config.mesh.data)
        parallel.check_batch_size(tc.batch_size, mesh)
    except parallel.ShardingError as error:
        raise TrainingError(str(error)) from None
    batch_sharding, replicated = parallel.batch_sharding(mesh), parallel.replicated(mesh)
    splits = ("val", "test") if tc.test_at_best and not _test_is_val(task) else ("val",)
    eval_steps = {split: tc.eval_steps or task.eval_steps(split, tc.batch_size) for split in splits}

    try:  # before anything is read or written: a changed config stops here
        workdir = rundir.open_run(workdir, config.to_dict())
        finished = rundir.finished_results(workdir, int(tc.steps))
    except rundir.RunDirError as error:
        raise TrainingError(str(error)) from None
    if finished is not None:
        print(f"{workdir}: finished already ({tc.steps} steps); results from results.json")
        return finished

    # A jitted init (on one example), replicated over the mesh.
    example = {
        k: np.asarray(v)[:1] for k, v in task.batch("train", 0, tc.batch_size, tc.seed).items()
    }
    init_key = jax.random.key(tc.seed)
    tx = optim.make_optimizer(tc, param_rules(model, example, spec.kind, tc))
    state = jax.jit(
        lambda b: create_state(model, tx, b, init_key, spec.kind), out_shardings=replicated
    )(example)
    n_params = _count_params(state.params)

    train_step = jax.jit(
        make_train_step(model, tx, spec.kind, tc),
        in_shardings=(replicated, batch_sharding),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
    eval_step = jax.jit(make_eval_step(model, spec.kind, tc), out_shardings=replicated)

    ckpts = checkpoint.Checkpoints(os.path.join(workdir, "checkpoints"), keep=tc.keep_checkpoints)
    writer = None
    try:
        try:
            restored = ckpts.restore_latest(state)
        except checkpoint.CheckpointError as error:
            raise TrainingError(str(error)) from None
        record = {"best": None, "wall_time_s": 0.0}
        if restored is not None:
            _, state, record = restored
        start = int(state.step)
        writer = logging_utils.MetricsWriter(workdir, tensorboard=tc.tensorboard)
        writer.truncate_after(start)
        loop = _Loop(config, task, train_step, eval_step, ckpts, writer, batch_sharding, eval_steps)
        loop.wall_offset = record.get("wall_time_s", 0.0) - wall_start
        with preemption.Guard() as guard:
            state, last = loop.run(state, start, record, guard)
        if tc.test_at_best and loop.best is not None and "test_accuracy" not in loop.best:
            # Resumed from a run made without test evaluation: score its best checkpoint.
            ckpts.wait()
            best_state, _ = ckpts.restore(loop.best["step"], state)
            loop.best = {**loop.best, **loop.test_metrics(best_state.params, loop.best)}
        wall = loop.wall_time()
        results = {
            "config": config.to_dict(),
            "steps": int(tc.steps),
            "resumed_from": start if restored is not None else None,
            "final": last,
            "best": loop.best,
            "params": n_params,
            "state": arch_state_size(model),  # floats per sequence; None: no recurrent form
            "wall_time_s": wall,
            "steps_per_s": loop.steps_per_s,
        }
        rundir.write_json(os.path.join(workdir, rundir.RESULTS), results)
        return results
    finally:
        ckpts.wait()
        ckpts.close()
        if writer is not None:
            writer.close()


def arch_state_size(model) -> dict | None:
    from arch.utils import state_size

    return state_size(model)


def _count_params(params) -> int:
    from arch.utils import count_params

    return count_params(params)


class _Loop:
    """The step loop and its bookkeeping (logging, eval, checkpoints, fault checks)."""

    def __init__(self, config, task, train_step, eval_step, ckpts, writer, sharding, eval_steps):
        self.config, self.tc = config, config.train
        self.task, self.train_step, self.eval_step = task, train_step, eval_step
        self.ckpts, self.writer, self.sharding = ckpts, writer, sharding
        self.eval_steps = eval_steps
        spec = task.spec
        self.tokens_per_step = (
            self.tc.batch_size * spec.seq_len * (2 if spec.kind == "retrieval" else 1)
        )
        self.best = None
        self.steps_per_s = None
        self.wall_offset = 0.0  # earlier runs' wall time minus this run's start

    def wall_time(self) -> float:
        return self.wall_offset + time.perf_counter()

    def _evaluate(self, params, split: str = "val"):
        tc = self.tc
        return evaluate(
            self.eval_step,
            params,
            self.task,
            self.eval_steps[split],
            tc.batch_size,
            tc.seed,
            self.sharding,
            split,
        )

    def test_metrics(self, params, eval_metrics: dict) -> dict:
        """``test_loss`` / ``test_accuracy`` of ``params`` ({} when switched off)."""
        if not self.tc.test_at_best:
            return {}
        if _test_is_val(self.task):  # the same examples: no second pass
            return {
                "test_" + k[len("eval_") :]: v
                for k, v in eval_metrics.items()
                if k.startswith("eval_")
            }
        return self._evaluate(params, "test")

    def run(self, state, start: int, record: dict, guard=None):
        tc = self.tc
        self.best = record.get("best")
        bar = logging_utils.progress_bar(tc.steps, start, tc.progress)
        pending, last = [], {}
        if start >= tc.steps:  # finished already: report the final evaluation again
            last = self._evaluate(state.params)
        mark, train_time, steps_done = time.perf_counter(), 0.0, 0
        try:
            for step in range(start, tc.steps):
                host_batch = self.task.batch("train", step, tc.batch_size, tc.seed)
                self._check_tokens(host_batch, step)
                batch = parallel.put_batch(host_batch, self.sharding)
                state, metrics = self.train_step(state, batch)
                pending.append(metrics)
                bar.update(1)
                done = step + 1
                if guard is not None and guard.signum is not None:
                    self._save_and_stop(state, done, guard.signum)
                is_last = done == tc.steps
                due_eval = done % tc.eval_every == 0 or is_last
                due_ckpt = done % tc.checkpoint_every == 0 or is_last
                if not (done % tc.log_every == 0 or due_eval or due_ckpt):
                    continue
                # Bookkeeping: synchronise, check, log; time spent here is not step time.
                means = {k: float(np.mean(v)) for k, v in _stack(jax.device_get(pending)).items()}
                elapsed = time.perf_counter() - mark
                train_time, steps_done = train_time + elapsed, steps_done + len(pending)
                means["step_time"] = elapsed / len(pending)
                means["tokens_per_s"] = self.tokens_per_step / means["step_time"]
                pending = []
                self.writer.write(done, means)  # a diverged interval is logged, then stops
                self._check_finite(state)
                last = dict(means)
                eval_metrics = None
                if due_eval:
                    eval_metrics = self._evaluate(state.params)
                    self.writer.write(done, eval_metrics)
                    last.update(eval_metrics)
                    improved = (
                        self.best is None or eval_metrics["eval_loss"] < self.best["eval_loss"]
                    )
                    if improved:
                        # The papers' number: test accuracy at the best validation checkpoint.
                        test = self.test_metrics(state.params, eval_metrics)
                        self.best = {"step": done, **eval_metrics, **test}
                    due_ckpt = due_ckpt or improved
                if due_ckpt:
                    record = {"best": self.best, "wall_time_s": self.wall_time()}
                    self.ckpts.save(done, state, record, metrics=eval_metrics)
                bar.set_postfix_str(logging_utils.format_postfix(last), refresh=False)
                mark = time.perf_counter()
        finally:
            bar.close()
        self.steps_per_s = steps_done / train_time if train_time > 0 else None
        return state, last

    def _check_tokens(self, batch, step: int) -> None:
        """Token ids outside the vocabulary would give NaN logits inside jit: stop here."""
        vocab = self.task.spec.vocab_size
        if vocab is None:
            return
        from arch.validate import check_token_range

        for key in ("inputs", "inputs1", "inputs2"):
            if key in batch:
                try:
                    check_token_range(batch[key], vocab, f" in the train batch of step {step}")
                except ValueError as error:
                    raise TrainingError(
                        f"{error}; the task {self.task.spec.name!r} declares vocab_size={vocab}"
                    ) from None

    def _save_and_stop(self, state, done: int, signum: int) -> None:
        """Preemption: a checkpoint at ``done`` (unless one exists), then ``Preempted``."""
        self._check_finite(state)  # never checkpoint a diverged state
        self.ckpts.wait()
        if done not in self.ckpts.steps():
            self.ckpts.save(done, state, {"best": self.best, "wall_time_s": self.wall_time()})
        self.ckpts.wait()
        raise preemption.Preempted(signum, done, os.path.dirname(self.ckpts.directory))

    def _check_finite(self, state) -> None:
        bad = int(state.first_bad_step)
        if bad < 0:
            return
        self.ckpts.wait()
        saved = self.ckpts.steps()
        kept = (
            f"the last good checkpoint is step {saved[-1]}" if saved else "no checkpoint was saved"
        )
        raise TrainingError(
            f"loss or gradient became non-finite (NaN/inf) at step {bad}; {kept} in "
            f"{self.ckpts.directory}. Lower train.lr, raise train.warmup_steps, or use "
            "float32 compute."
        )


def _test_is_val(task) -> bool:
    return bool(getattr(task, "test_is_val", False))


def _stack(dicts: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.asarray([d[k] for d in dicts]) for k in dicts[0]}
