"""The base config: every field the training loop reads, with its default.

Family/task configs (``configs/synthetic/*``, ``configs/lra/*``) start from
``get_config()`` and change values; they never add keys outside ``model`` and
``task.options``. The config is locked, so a misspelt key is an error: through absl
``config_flags`` (``--config.train.lr=...``) and through ``override`` below.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from collections.abc import Mapping
from typing import Any

import ml_collections
from ml_collections import config_dict

# Sub-dicts whose keys are free-form: arch.build / make_task validate them instead.
OPEN_KEYS = ("model", "task.options")


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    # Which architecture of arch.ARCHS to build.
    config.arch = "mamba"

    # Keyword arguments of arch.build besides the ones the task fixes (vocab_size,
    # d_input, head, n_classes, max_len). Mixer options (n_heads, d_state, ...) go here too.
    config.model = ml_collections.ConfigDict()
    config.model.d_model = 64
    config.model.n_layers = 2
    config.model.dropout = 0.0

    config.task = ml_collections.ConfigDict()
    config.task.name = "mqar"  # a name of experiments.tasks.registry
    config.task.options = ml_collections.ConfigDict()  # keyword arguments of make_task

    config.train = ml_collections.ConfigDict()
    config.train.steps = 1000  # optimizer steps in the whole run
    config.train.batch_size = 32  # global batch, split over the data-parallel devices
    config.train.seed = 0  # parameters, dropout and data all derive from it
    config.train.lr = 1e-3  # peak learning rate of parameters with the default rule
    # "cosine": linear warmup, then cosine to min_lr_ratio * peak at `steps`; "rsqrt":
    # lr * min(1, step / warmup) / sqrt(max(step, warmup)) (the LRA Transformer's
    # "constant * linear_warmup * rsqrt_decay"; `lr` is then that constant, not the peak).
    config.train.schedule = "cosine"
    config.train.warmup_steps = 100  # linear warmup from 0 to the peak
    config.train.min_lr_ratio = 0.1  # cosine decay ends at min_lr_ratio * peak
    config.train.weight_decay = 0.1  # AdamW decoupled decay (not norms, biases, embeddings)
    config.train.decay_all = False  # True: decay every parameter (LRA's flax optim.Adam)
    config.train.b1 = 0.9  # Adam first-moment decay
    config.train.b2 = 0.98  # Adam second-moment decay
    config.train.eps = 1e-8  # Adam epsilon
    config.train.grad_clip = 1.0  # global-norm clipping; 0 disables it
    config.train.ssm_lr = 1e-3  # peak rate of the parameters a module declares SSM
    config.train.ssm_weight_decay = 0.0  # SSM / decay parameters are not decayed
    # big_vision-style refinements of the modules' own rules (arch/params.py): lists of
    # (regex, multiplier); the first regex that fully matches a parameter path such as
    # "backbone/blocks_0/mixer/A_log" multiplies its learning rate / weight decay.
    config.train.lr_mults = ()
    config.train.wd_mults = ()
    config.train.compute_dtype = "float32"  # "float32" or "bfloat16" (params stay float32)
    # Language models with a recurrent form: > 0 computes the logits chunk by chunk along
    # time through the state (arch/time_chunks.py; the same numbers, a chunk-sized working
    # set, faster on CPU: docs/benchmarks.md; `run.py bench train --time_chunk 128,512`
    # measures it). No dropout. 0: one parallel call.
    config.train.time_chunk = 0
    # What each time chunk keeps for the backward: "dots" (the matmul outputs; the rest
    # is recomputed while the chunk is in the cache), "none" (everything), "all" (only
    # the state entering the chunk). The same numbers either way.
    config.train.time_chunk_recompute = "dots"
    config.train.log_every = 50  # steps between metric lines
    config.train.eval_every = 500  # steps between evaluations (and at the end)
    config.train.eval_steps = config_dict.placeholder(int)  # None: the task's eval_steps
    config.train.test_at_best = True  # evaluate "test" whenever val loss improves
    config.train.checkpoint_every = 500  # steps between checkpoints (and at the end)
    config.train.keep_checkpoints = 2  # latest checkpoints kept (the best one is kept too)
    # A workdir holding a run made with another config: False starts a new run beside it
    # (workdir-2, ...) instead of stopping (experiments/rundir.py).
    config.train.resume = True
    config.train.progress = True  # tqdm progress bar
    config.train.tensorboard = True  # TensorBoard events next to metrics.jsonl

    # Data-parallel mesh: the batch axis is split over `data` devices (-1 = all).
    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1

    # Multi-host: jax.distributed.initialize arguments (None = auto-detect, e.g. SLURM).
    config.distributed = ml_collections.ConfigDict()
    config.distributed.enabled = False
    config.distributed.coordinator_address = config_dict.placeholder(str)
    config.distributed.num_processes = config_dict.placeholder(int)
    config.distributed.process_id = config_dict.placeholder(int)

    config.lock()
    for key in OPEN_KEYS:
        _get(config, key).unlock()
    return config


def _get(config: ml_collections.ConfigDict, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def _is_dict(x) -> bool:
    return isinstance(x, Mapping | ml_collections.ConfigDict)


def _is_open(path: str) -> bool:
    return any(path == k or path.startswith(k + ".") for k in OPEN_KEYS)


def unknown_keys(config, reference, prefix: str = "") -> list[str]:
    """Dotted keys of ``config`` that ``reference`` lacks (free-form sub-dicts excepted)."""
    found = []
    for key, value in config.items():
        path = f"{prefix}{key}"
        if _is_open(path):
            continue
        if key not in reference:
            found.append(path)
        elif _is_dict(value) and _is_dict(reference[key]):
            found += unknown_keys(value, reference[key], path + ".")
    return found


def override(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]):
    """A copy of ``config`` with ``{"train.lr": 3e-4, "model.d_state": 8, ...}`` applied.

    Keys are dotted paths; a key the config does not have is a ``KeyError`` naming the
    valid ones, except inside the free-form ``model`` and ``task.options``.
    """
    config = copy.deepcopy(config)  # keeps the locks and the placeholders' types
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = config
        for i, part in enumerate(parents):
            if not _is_dict(node) or part not in node:
                raise KeyError(_unknown_message(".".join(parents[: i + 1]), node))
            node = node[part]
        if not _is_dict(node):
            raise KeyError(f"unknown config key {dotted!r}: {'.'.join(parents)} is a value")
        if leaf not in node and not _is_open(".".join(parents)):
            raise KeyError(_unknown_message(dotted, node))
        node[leaf] = value
    return config


def _unknown_message(dotted: str, node) -> str:
    if not _is_dict(node):
        return f"unknown config key {dotted!r}: its parent is a value, not a dict"
    return f"unknown config key {dotted!r}; valid here: {', '.join(sorted(node.keys()))}"


def load_config_file(spec: str):
    """``path.py[:arg]`` -> ``get_config(arg)`` of that file, as ``--config`` loads it."""
    path, sep, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_run_config", path)
    if module_spec is None or not os.path.exists(path):
        raise FileNotFoundError(f"config file {path} not found")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if sep else module.get_config()
