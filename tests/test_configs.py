"""Every config file loads for every architecture and builds a model."""

import glob
import importlib.util
import os

import pytest

import arch
from experiments import lra_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(
    p
    for p in glob.glob(os.path.join(ROOT, "configs", "*", "*.py"))
    if not os.path.basename(p).startswith("_")
    and os.path.basename(p) != "common.py"
    # sweep configs describe grids of these configs; tests/experiments/test_sweep.py
    # expands each of them
    and os.path.basename(os.path.dirname(p)) != "sweeps"
)


def load(path):
    spec = importlib.util.spec_from_file_location("cfg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: os.path.relpath(p, ROOT))
def test_config_loads_for_every_arch(path):
    module = load(path)
    for name in arch.ARCHS:
        config = module.get_config(name)
        assert config.arch == name
        assert config.task.name
    with pytest.raises(ValueError, match="unknown architecture"):
        module.get_config("not_an_arch")


# ---------------------------------------------------- LRA recipes pinned to the official code


def lra(task, arg):
    return load(os.path.join(ROOT, "configs", "lra", f"{task}.py")).get_config(arg)


@pytest.mark.parametrize("task", ["listops", "text", "retrieval", "image", "pathfinder", "pathx"])
def test_lra_schedule_is_the_s4_one(task):
    """state-spaces/s4 s4-*.yaml: warmup = 10% of the steps, cosine to 0, AdamW
    (0.9, 0.999), no gradient clipping."""
    config = lra(task, "s4")
    assert config.train.warmup_steps == config.train.steps // 10
    assert config.train.min_lr_ratio == 0.0
    assert (config.train.b1, config.train.b2) == (0.9, 0.999)
    assert config.train.grad_clip == 0.0


def test_lra_s4_layer_options_follow_each_task_yaml():
    listops, image, pathx = lra("listops", "s4"), lra("image", "s4d"), lra("pathx", "s4")
    # lr: {dt: null, A: 0.001, B: 0.001} and n_ssm 1 (s4-listops.yaml); post-norm there.
    assert (listops.model.n_ssm, listops.model.dt_lr, listops.model.c_lr) == (1, "global", "global")
    assert listops.model.prenorm is False
    # scalar lr 0.001 reaches C too (s4-cifar.yaml); n_ssm 1.
    assert (image.model.n_ssm, image.model.dt_lr, image.model.c_lr) == (1, "ssm", "ssm")
    # Path-X: dt_min 1e-4, one SSM per channel (n_ssm null), pre-norm.
    assert pathx.model.dt_min == 1e-4 and "n_ssm" not in pathx.model
    assert pathx.model.prenorm is True


def test_lra_transformer_is_the_lra_papers_per_task():
    """google-research/long-range-arena (cd31e5c) task configs, field by field."""
    official = {  # emb, heads, layers, qkv, mlp, batch, steps, lr, warmup, schedule, wd
        "listops": (512, 8, 4, 512, 1024, 32, 5000, 0.05, 1000, "rsqrt", 0.1),
        "text": (256, 4, 4, 256, 1024, 32, 20000, 0.05, 8000, "rsqrt", 0.1),
        "retrieval": (128, 4, 4, 128, 512, 32, 5000, 0.05, 8000, "rsqrt", 0.1),
        "image": (128, 8, 1, 64, 128, 256, 35000, 5e-4, 175, "cosine", 0.0),
        "pathfinder": (32, 4, 4, 16, 32, 512, 62400, 1e-3, 312, "cosine", 0.0),
    }
    for task, values in official.items():
        c = lra(task, "transformer")
        m, t = c.model, c.train
        ours = (m.d_model, m.n_heads, m.n_layers, m.qkv_dim, m.head_mlp, t.batch_size, t.steps)
        ours += (t.lr, t.warmup_steps, t.schedule, t.weight_decay)
        assert ours == values, task
        assert m.d_model * m.channel_options.expand == m.head_mlp  # MlpBlock width = mlp_dim
        assert (t.b1, t.b2, t.eps, t.decay_all, t.grad_clip) == (0.9, 0.98, 1e-9, True, 0.0)
        assert m.prenorm and m.pos == "none" and m.weight_init == "xavier" and not m.use_bias
    listops, image, path = (lra(t, "transformer").model for t in ("listops", "image", "pathfinder"))
    assert (listops.pooling, listops.cls_token, listops.pos_emb) == ("cls", True, "sinusoidal")
    assert (listops.dropout, listops.attn_dropout) == (0.1, 0.1)
    assert (image.pos_emb, image.dropout, image.attn_dropout) == ("learned", 0.3, 0.2)
    assert (path.pooling, path.cls_token, path.dropout) == ("mean", False, 0.2)
    assert lra("text", "transformer").task.options.seq_len == 1000  # base_tc_config max_length


def test_lra_s5_is_the_s5_repos_per_task():
    """lindermanlab/S5 (3c18fdb) bin/run_experiments/run_lra_*.sh, field by field."""
    official = {  # d_model, layers, P, blocks, C_init, act, batch, epochs, lr_factor, ssm_lr, wd
        "listops": (128, 8, 16, 8, "lecun_normal", "half_glu2", 50, 40, 3, 1e-3, 0.04),
        "text": (256, 6, 192, 12, "lecun_normal", "half_glu2", 50, 35, 4, 1e-3, 0.07),
        "retrieval": (128, 6, 256, 16, "trunc_standard_normal", "half_glu1", 32, 20, 2, 1e-3, 0.05),
        "image": (512, 6, 384, 3, "lecun_normal", "half_glu1", 50, 250, 4.5, 1e-3, 0.07),
        "pathfinder": (
            192,
            6,
            256,
            8,
            "trunc_standard_normal",
            "half_glu1",
            64,
            200,
            5,
            9e-4,
            0.03,
        ),
        "pathx": (128, 6, 256, 16, "complex_normal", "half_glu1", 32, 75, 3, 6e-4, 0.06),
    }
    n_train = {"listops": 96_000, "text": 25_000, "retrieval": 147_086, "image": 45_000,
               "pathfinder": 160_000, "pathx": 160_000}  # fmt: skip
    for task, values in official.items():
        c = lra(task, "s5")
        m, t = c.model, c.train
        ours = (m.d_model, m.n_layers, m.d_state, m.blocks, m.C_init, m.activation)
        ours += (t.batch_size, t.steps // (n_train[task] // t.batch_size))
        ours += (round(t.lr / t.ssm_lr, 6), t.ssm_lr, t.weight_decay)
        assert ours == values, task
        assert m.bidirectional and m.prenorm and m.pooling == "mean"
        assert t.decay_all and t.ssm_weight_decay == 0 and t.min_lr_ratio == 0
    # opt_config / dt_global / clip_eigs / dt_min per script
    assert (lra("listops", "s5").model.b_lr, lra("text", "s5").model.dt_lr) == ("global", "global")
    assert lra("image", "s5").model.clip_eigs and lra("pathx", "s5").model.dt_min == 1e-4
    assert lra("pathx", "s5").model.b_lr == "ssm_decay"
    assert lra("text", "s5").train.warmup_steps == 0  # warmup_end=0 on IMDB


@pytest.mark.parametrize("name", ["transformer", "rwkv", "mamba", "aft_simple"])
def test_lra_other_archs_keep_their_own_block_layout(name):
    """S4's post-norm ListOps setting is S4's; the other papers are pre-norm."""
    model = arch.build(
        name,
        **{k: v for k, v in lra("listops", name).model.items() if k != "pooling"},
        vocab_size=8,
        head="classify",
        n_classes=2,
    )
    assert model.backbone.prenorm is True


@pytest.mark.parametrize("index, task", list(enumerate(lra_table.TASKS)))
def test_lra_config_docstrings_carry_the_published_numbers(index, task):
    """Each task file's docstring states the published rows it targets, in sync with the
    table that `run.py table lra` prints."""
    doc = load(os.path.join(ROOT, "configs", "lra", f"{task}.py")).__doc__
    assert "python run.py train --config configs/lra/" in doc
    rows = {
        spec.recipes["lra"].get("published")
        for spec in arch.ARCHS.values()
        if "lra" in spec.recipes
    }
    assert {"S4 (latest)", "S4D-LegS", "RWKV", "Transformer", "S5"} <= rows
    for row in sorted(rows - {None}):
        value = lra_table.PUBLISHED[row][0][index]
        assert f"{row} {'fail' if value is None else f'{value:.2f}'}" in doc, (task, row)


def test_mqar_smoke_variant_is_tiny_and_a_wrong_variant_is_named():
    from configs.synthetic import mqar

    full, smoke = mqar.get_config("rwkv6"), mqar.get_config("rwkv6,smoke")
    assert smoke.arch == full.arch == "rwkv6"
    assert (smoke.model.d_model, smoke.model.n_layers, smoke.train.steps) == (32, 1, 4)
    assert smoke.task.to_dict() == full.task.to_dict()  # the same task, only smaller
    assert mqar.get_config(None).arch == "mamba"
    with pytest.raises(ValueError, match="variant in smoke"):
        mqar.get_config("rwkv6,huge")
