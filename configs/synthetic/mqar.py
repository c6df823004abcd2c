"""Multi-query associative recall (zoology's MQAR), small enough for a CPU.

    python run.py train --config configs/synthetic/mqar.py:mamba --workdir runs/mqar_mamba
    python run.py compare --config configs/synthetic/mqar.py --archs transformer,rwkv,mamba

This is also the config of `python run.py` (no arguments). The argument after ':' is
any name of arch.ARCHS, optionally followed by ",smoke": a few seconds of training at
width 32 with one layer (what the notebooks run in CI), e.g. `mqar.py:rwkv6,smoke`.
"""

from configs.common import with_arch

VARIANTS = ("smoke",)

# Each family's best peak learning rate on this task by the mean accuracy over two seeds,
# from {3e-4, 1e-3, 3e-3, 1e-2} (zoology tunes the rate per model the same way); measured
# with `python run.py sweep --config configs/sweeps/mqar_lr.py` (table in the README).
# Attention is best low: at 3e-3 its induction circuit often never forms in the budget.
# The recurrences are best at the top of the grid.
LR = {
    "transformer": 1e-3,
    "aft_simple": 1e-3,
    "rwkv": 1e-2,
    "s4d": 1e-2,
    "mamba": 1e-2,
    "hawk": 1e-2,
}
DEFAULT_LR = 1e-2  # archs outside that sweep (the newer cells): the recurrences' best


def get_config(arg=None):
    arch, _, variant = (arg or "").partition(",")
    if variant and variant not in VARIANTS:
        raise ValueError(
            f"config argument {arg!r}: expected 'arch' or 'arch,variant' with variant in "
            f"{', '.join(VARIANTS)}"
        )
    config = with_arch(arch or None)
    config.task.name = "mqar"
    # Small enough that every family trains in about a minute or less on 2 CPU cores;
    # raise vocab_size / seq_len / num_kv_pairs (zoology: 8192 / 64-512 / 4-64) for the
    # real thing on an accelerator. The vocabulary is larger than the sequence, as in
    # zoology, so a key cannot be guessed from the few tokens the sequence holds.
    config.task.options.vocab_size = 32
    config.task.options.seq_len = 16
    config.task.options.num_kv_pairs = 2
    config.task.options.random_non_queries = False
    config.model.d_model = 64
    config.model.n_layers = 2
    config.train.steps = 1000
    config.train.batch_size = 64
    config.train.lr = LR.get(config.arch, DEFAULT_LR)
    config.train.ssm_lr = 1e-3
    config.train.warmup_steps = 100
    config.train.weight_decay = 0.1  # zoology's MQAR weight decay
    config.train.log_every = 25
    config.train.eval_every = 250
    config.train.checkpoint_every = 500
    if variant == "smoke":
        config.model.d_model, config.model.n_layers = 32, 1
        config.train.steps, config.train.eval_every, config.train.log_every = 4, 4, 2
        config.train.eval_steps, config.train.progress = 1, False
    return config
