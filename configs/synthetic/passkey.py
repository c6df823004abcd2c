"""Passkey retrieval: a 5-digit key hidden at a random depth in byte-level filler text.

python run.py train --config configs/synthetic/passkey.py:mamba --workdir runs/passkey_mamba
"""

from configs.common import with_arch


def get_config(arch=None):
    config = with_arch(arch)
    config.task.name = "passkey"
    config.task.options.seq_len = 512
    config.task.options.n_digits = 5
    config.model.d_model = 128
    config.model.n_layers = 2
    config.train.steps = 3000
    config.train.batch_size = 16
    config.train.lr = 1e-3
    config.train.eval_every = 500
    config.train.checkpoint_every = 500
    return config
