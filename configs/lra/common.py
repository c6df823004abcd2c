"""Long Range Arena configs: published hyperparameters where they exist, documented
choices where they do not. Every task file calls ``lra_config(task, arg)``.

``arg`` is ``arch`` or ``arch,variant`` after the ':' of ``--config``:

- (none)  the full recipe (GPU-sized; the published numbers were measured like this);
- small   LRA-small: reduced data and models that train on a 2-core CPU (ListOps,
          Pathfinder-32) in about 20 minutes per architecture;
- smoke   a 2-minute CPU run of any task: tiny model, a few dozen steps.

The task table below is the S4 paper's per-task layout (state-spaces/s4
``configs/experiment/lra/s4-*.yaml``). What differs per architecture (learning rate,
weight decay, epochs, mixer options) is its LRA recipe, which lives in its
``ArchSpec`` (``arch/registry.py``, with the sources): a value ``FROM_TASK`` there
means this table's value. An architecture without an LRA recipe (a new cell) stops
with a message naming the field to set. One deliberate difference from
state-spaces/s4: LayerNorm instead of BatchNorm (BatchNorm has no recurrent form).
"""

from __future__ import annotations

import math

import ml_collections

from configs.common import with_arch

# Per task: the S4 table (d_model, d_state, lr, weight decay, batch, epochs, dropout,
# prenorm), the training-set size, and the task options. state-spaces/s4
# configs/experiment/lra/s4-{listops,imdb,aan,cifar,pathfinder,pathx}.yaml (commit
# e757cef5, composed with hydra): 6 layers, bidirectional, BatchNorm, AdamW (0.9, 0.999),
# no gradient clipping, cosine schedule with 10% linear warmup. The S4 layer columns:
# n_ssm (copies of A, B, P shared over the channels; None = one per channel), dt_lr
# ("global": `lr: {dt: null, A: 0.001, B: 0.001}`, dt at the model's rate without decay;
# "ssm": the scalar `lr: 0.001`), c_lr ("ssm": that scalar reaches C too, with the
# model's weight decay) and dt_min (Path-X: 1e-4; None = the layer default 1e-3).
TASKS = {
    "listops": dict(
        d_model=256,
        d_state=4,
        lr=0.01,
        wd=0.05,
        batch=32,
        epochs=40,
        dropout=0.0,
        prenorm=False,
        n_train=96_000,
        n_ssm=1,
        dt_lr="global",
        c_lr="global",
        dt_min=None,
        options={},
    ),
    "text": dict(
        d_model=256,
        d_state=4,
        lr=0.01,
        wd=0.05,
        batch=16,
        epochs=32,
        dropout=0.0,
        prenorm=True,
        n_train=25_000,
        n_ssm=1,
        dt_lr="global",
        c_lr="global",
        dt_min=None,
        options={"seq_len": 4096},
    ),
    "retrieval": dict(
        d_model=256,
        d_state=4,
        lr=0.01,
        wd=0.05,
        batch=64,
        epochs=20,
        dropout=0.0,
        prenorm=True,
        n_train=147_086,
        n_ssm=1,
        dt_lr="global",
        c_lr="global",
        dt_min=None,
        options={"seq_len": 4000},
    ),
    "image": dict(
        d_model=512,
        d_state=64,
        lr=0.01,
        wd=0.05,
        batch=50,
        epochs=200,
        dropout=0.1,
        prenorm=False,
        n_train=45_000,
        n_ssm=1,
        dt_lr="ssm",
        c_lr="ssm",
        dt_min=None,
        options={},
    ),
    "pathfinder": dict(
        d_model=256,
        d_state=64,
        lr=0.004,
        wd=0.05,
        batch=64,
        epochs=200,
        dropout=0.0,
        prenorm=True,
        n_train=160_000,
        n_ssm=None,
        dt_lr="ssm",
        c_lr="ssm",
        dt_min=None,
        options={"resolution": 32},
    ),
    "pathx": dict(
        d_model=256,
        d_state=64,
        lr=0.001,
        wd=0.05,
        batch=16,
        epochs=50,
        dropout=0.0,
        prenorm=True,
        n_train=160_000,
        n_ssm=None,
        dt_lr="ssm",
        c_lr="ssm",
        dt_min=1e-4,
        options={"resolution": 128},
    ),
}
VARIANTS = ("full", "small", "smoke")


def parse(arg: str | None) -> tuple[str, str]:
    parts = (arg or "s4").split(",")
    arch, variant = parts[0] or "s4", (parts[1] if len(parts) > 1 else "full")
    if len(parts) > 2 or variant not in VARIANTS:
        raise ValueError(
            f"config argument {arg!r}: expected 'arch' or 'arch,variant' with "
            f"variant in {', '.join(VARIANTS)}"
        )
    return arch, variant


_TABLE_NAMES = {"lr": "lr", "weight_decay": "wd"}  # recipe field -> task-table column


def _from_table(value, field: str, hp: dict):
    from arch.registry import FROM_TASK

    return hp[_TABLE_NAMES.get(field, field)] if value is FROM_TASK else value


def arch_recipe(arch: str, task: str, hp: dict) -> dict:
    """The architecture's LRA recipe for ``task``, ``FROM_TASK`` values filled in.

    A model field whose table value is None (e.g. ``n_ssm`` on Pathfinder) is left at
    the layer's default.
    """
    from arch.registry import get

    recipe = get(arch).recipe(arch, "lra")
    model = {k: _from_table(v, k, hp) for k, v in (recipe.get("model") or {}).items()}
    return {
        "lr": _from_table(recipe["lr"], "lr", hp),
        "wd": _from_table(recipe["weight_decay"], "weight_decay", hp),
        "epochs": dict(recipe.get("epochs") or {}).get(task, hp["epochs"]),
        "model": {k: v for k, v in model.items() if v is not None},
        "task_recipe": dict((recipe.get("tasks") or {}).get(task) or {}),
    }


def lra_config(task: str, arg: str | None) -> ml_collections.ConfigDict:
    from arch.registry import get

    arch, variant = parse(arg)
    config = with_arch(arch)  # an unknown arch stops here, listing the valid ones
    hp = dict(TASKS[task])
    extra = arch_recipe(arch, task, hp)
    hp.update({k: v for k, v in extra.items() if k not in ("model", "task_recipe")})

    config.task.name = task
    for key, value in hp["options"].items():
        config.task.options[key] = value
    config.model.d_model = hp["d_model"]
    config.model.n_layers = 6
    config.model.dropout = hp["dropout"]
    # prenorm: the S4 table's per-task value reaches the S4 family through its recipe;
    # every other architecture keeps its own paper's layout (ArchSpec.prenorm).
    config.model.pooling = "mean"
    config.model.bidirectional = get(arch).bidirectional_ok  # S4 runs LRA bidirectionally
    for key, value in extra["model"].items():
        config.model[key] = value

    steps_per_epoch = hp["n_train"] // hp["batch"]
    config.train.batch_size = hp["batch"]
    config.train.steps = hp["epochs"] * steps_per_epoch
    config.train.lr = hp["lr"]
    config.train.ssm_lr = 1e-3  # S4/S5: A, B, dt at 1e-3 with no weight decay
    config.train.weight_decay = hp["wd"]
    config.train.warmup_steps = config.train.steps // 10  # s4-*.yaml: warmup = 10% of steps
    config.train.min_lr_ratio = 0.0  # transformers' cosine schedule ends at 0
    config.train.b2 = 0.999  # configs/optimizer/adamw.yaml: betas [0.9, 0.999]
    config.train.grad_clip = 0.0  # configs/trainer/default.yaml: gradient_clip_val null
    config.train.eval_every = steps_per_epoch
    config.train.checkpoint_every = steps_per_epoch
    config.train.log_every = 100
    _apply_task_recipe(config, extra["task_recipe"], hp["n_train"])
    if variant == "small":
        _small(config, task)
    elif variant == "smoke":
        _smoke(config, task)
    return config


def _apply_task_recipe(config, recipe: dict, n_train: int) -> None:
    """An architecture's own recipe for this task (the LRA Transformer's), set last.

    Its model options replace the S4 layout's, its train fields the S4 schedule (a
    misspelt train field is an error: the train config is locked).
    """
    for key, value in (recipe.get("model") or {}).items():
        config.model[key] = value
    for key, value in (recipe.get("train") or {}).items():
        config.train[key] = value
    for key, value in (recipe.get("task") or {}).items():
        config.task.options[key] = value
    steps_per_epoch = n_train // config.train.batch_size
    if "epochs" in recipe:  # a recipe given in epochs of its own batch size
        config.train.steps = recipe["epochs"] * steps_per_epoch
    if "warmup_epochs" in recipe:
        config.train.warmup_steps = recipe["warmup_epochs"] * steps_per_epoch
    if recipe.get("train"):  # evaluate once per epoch of its own batch size
        config.train.eval_every = config.train.checkpoint_every = steps_per_epoch


def _shrink(config, d_model: int) -> None:
    """Set the width; widths of their own (the LRA Transformer's qkv and head MLP) keep
    their ratio to it."""
    d_full = config.model.d_model
    config.model.d_model = d_model
    for key in ("qkv_dim", "head_mlp"):
        if config.model.get(key):
            config.model[key] = max(config.model[key] * d_model // d_full, 4)


def _fit_blocks(config) -> None:
    """S5's blocks must divide the (reduced) number of conjugate pairs."""
    if "blocks" in config.model:
        config.model.blocks = math.gcd(config.model.blocks, config.model.d_state // 2)


def _small(config, task: str) -> None:
    """LRA-small: the README's 2-core CPU recipe (reduced data; 4 layers of width 64).

    Sized so that the slowest architecture (Mamba's sequential scan on CPU) trains in
    about 20 minutes: ListOps of 30-250 tokens (``run.py data listops-small``: 18,000
    training, 1,000 validation and 1,000 test examples), batch 16, 2000 steps. The
    README also gives each architecture about the same time (18-19 minutes, steps
    overridden).
    """
    _shrink(config, d_model=64)
    config.model.n_layers = 4
    if "d_state" in config.model and config.model.d_state > 16:
        config.model.d_state = 16
    _fit_blocks(config)
    if "n_heads" in config.model:
        config.model.n_heads = 4  # head_dim 16
    if config.model.get("attn_dropout"):
        # Dropping attention probabilities draws a random number per (head, query, key):
        # it triples the CPU step (2.9 s vs 1.0 s measured at this size on one core).
        config.model.attn_dropout = 0.0
    config.train.batch_size = 16
    config.train.steps = 2000
    config.train.warmup_steps = 200
    config.train.eval_every = 500
    config.train.checkpoint_every = 500
    config.train.log_every = 50
    config.train.eval_steps = None  # the whole validation split
    config.task.options.data_dir = "data/lra-small"
    if task == "listops":
        config.task.options.seq_len = 256
    if task in ("pathfinder", "pathx"):
        config.task.options.resolution = 32


def _smoke(config, task: str) -> None:
    """Any task in about two minutes on a CPU: a tiny model, a few dozen steps."""
    _shrink(config, d_model=32)
    config.model.n_layers = 2
    if "d_state" in config.model:
        config.model.d_state = min(config.model.d_state, 8)
    _fit_blocks(config)
    if "n_heads" in config.model:
        config.model.n_heads = 4
    config.train.batch_size = 8
    config.train.steps = 40
    config.train.warmup_steps = 4
    config.train.eval_every = 20
    config.train.checkpoint_every = 20
    config.train.log_every = 10
    config.train.eval_steps = 4
    if "seq_len" in config.task.options:
        config.task.options.seq_len = min(config.task.options.seq_len, 1024)
    if task in ("pathfinder", "pathx"):
        config.task.options.resolution = 32
