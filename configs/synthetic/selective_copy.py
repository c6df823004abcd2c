"""Selective copying (Mamba paper section 4.1), CPU-sized.

python run.py train --config configs/synthetic/selective_copy.py:mamba --workdir runs/sc_mamba
"""

from configs.common import with_arch


def get_config(arch=None):
    config = with_arch(arch)
    config.task.name = "selective_copy"
    config.task.options.vocab_size = 16
    config.task.options.seq_len = 128
    config.task.options.n_tokens = 8
    config.train.steps = 2000
    config.train.batch_size = 32
    config.train.lr = 2e-3
    config.train.eval_every = 250
    config.train.checkpoint_every = 500
    return config
