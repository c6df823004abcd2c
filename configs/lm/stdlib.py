"""Byte-level language modelling of the Python standard library's own source, on a CPU.

    python run.py data lm        # once: data/lm/stdlib-byte, no download
    python run.py train --config configs/lm/stdlib.py:mamba --workdir runs/lm/mamba
    python run.py eval --workdir runs/lm/mamba

The corpus is every ``*.py`` file of the running Python's standard library (test suites
and site-packages left out): about 12 MB, so 12M byte tokens, 2% of the files held out
(``docs/lm.md``). The argument after ':' is any name of arch.ARCHS, optionally followed by
",smoke" (a few steps at width 32, for tests and notebooks). Each architecture has its
own width so that all have about 0.86M parameters (``configs/lm/common.py``); they share
one recipe, ours: AdamW at 2e-3 (state-space parameters at 1e-3), betas (0.9, 0.95),
weight decay 0.1, 25 warmup steps, cosine to a tenth over 250 steps of 8 x 256 bytes
(512K bytes, 4% of the training split: minutes on 2 cores, a comparison of early
learning, not of converged models).
"""

from configs.lm.common import CPU_SHAPES, DEFAULT_SHAPE, lm_config, split_arg

VARIANTS = ("smoke",)
DATA_DIR = "data/lm/stdlib-byte"  # where `python run.py data lm` writes by default


def get_config(arg=None):
    arch, variant = split_arg(arg, VARIANTS)
    config = lm_config(arch, DATA_DIR, seq_len=256)
    config.task.options.eval_windows = 128  # 32K of the 122K validation bytes, spread out
    for key, value in CPU_SHAPES.get(config.arch, DEFAULT_SHAPE).items():
        config.model[key] = value
    train = config.train
    train.steps = 250
    train.batch_size = 8
    train.lr = 2e-3
    train.ssm_lr = 1e-3  # S4/S5/Mamba's A, B, dt: the rate state-spaces/s4 gives them
    train.b2 = 0.95
    train.weight_decay = 0.1
    train.warmup_steps = 25
    train.log_every = 25
    train.eval_every = 125
    train.checkpoint_every = 125
    if variant == "smoke":
        config.model.d_model, config.model.n_layers = 32, 1
        config.task.options.seq_len, config.task.options.eval_windows = 32, 4
        train.steps, train.eval_every, train.log_every = 4, 4, 2
        train.batch_size, train.warmup_steps, train.progress = 4, 1, False
    return config
