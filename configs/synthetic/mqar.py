"""Multi-query associative recall (zoology's MQAR), small enough for a CPU.

    python run.py train --config configs/synthetic/mqar.py:mamba --workdir runs/mqar_mamba
    python run.py compare --config configs/synthetic/mqar.py --archs transformer,rwkv,mamba

This is also the config of `python run.py` (no arguments). The argument after ':' is
any name of arch.ARCHS, optionally followed by ",smoke": a few seconds of training at
width 32 with one layer (what the notebooks run in CI), e.g. `mqar.py:rwkv6,smoke`.
"""

from configs.common import with_arch

VARIANTS = ("smoke",)


def get_config(arg=None):
    arch, _, variant = (arg or "").partition(",")
    if variant and variant not in VARIANTS:
        raise ValueError(
            f"config argument {arg!r}: expected 'arch' or 'arch,variant' with variant in "
            f"{', '.join(VARIANTS)}"
        )
    config = with_arch(arch or None)
    config.task.name = "mqar"
    # Small enough that every family trains in well under a minute on 2 CPU cores;
    # raise vocab_size / seq_len / num_kv_pairs (zoology: 8192 / 64-512 / 4-64) for the
    # real thing on an accelerator.
    config.task.options.vocab_size = 64
    config.task.options.seq_len = 16
    config.task.options.num_kv_pairs = 2
    config.task.options.random_non_queries = False
    config.model.d_model = 64
    config.model.n_layers = 2
    config.train.steps = 600
    config.train.batch_size = 64
    config.train.lr = 3e-3
    config.train.ssm_lr = 1e-3
    config.train.warmup_steps = 60
    config.train.weight_decay = 0.1
    config.train.log_every = 25
    config.train.eval_every = 150
    config.train.checkpoint_every = 300
    if variant == "smoke":
        config.model.d_model, config.model.n_layers = 32, 1
        config.train.steps, config.train.eval_every, config.train.log_every = 4, 4, 2
        config.train.eval_steps, config.train.progress = 1, False
    return config
