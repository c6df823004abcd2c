"""Learning, not just running: attention and Mamba learn recall on a tiny MQAR on CPU.

One key-value pair per sequence (random filler around it): the value must be carried
from the start of the sequence to a query placed anywhere later. Chance is 1/16 (the
value half of the vocabulary); the threshold is far above what an untrained model gets.
Multi-pair MQAR needs the induction mechanism to form, which takes far more steps than a
CPU test affords; `python run.py` shows that longer comparison.
"""

import pytest

from configs.synthetic import mqar
from experiments.train import train


@pytest.mark.parametrize("arch_name", ["transformer", "mamba"])
def test_tiny_recall_is_learned(arch_name, tmp_path):
    config = mqar.get_config(arch_name)
    config.task.options.vocab_size = 32
    config.task.options.seq_len = 16
    config.task.options.num_kv_pairs = 1
    config.model.d_model = 32
    config.train.steps = 300
    config.train.batch_size = 16
    config.train.lr = 3e-3
    config.train.warmup_steps = 30
    config.train.eval_every = 300
    config.train.eval_steps = 4
    config.train.checkpoint_every = 300
    config.train.progress = False
    config.train.tensorboard = False
    results = train(config, str(tmp_path))
    assert results["final"]["eval_accuracy"] > 0.9, results["final"]
