"""The papers' ~150M language models on the Pile with the GPT-NeoX-20B tokenizer (for
accelerators; the user supplies the corpus and the tokenizer.json: nothing is downloaded).

    python run.py data lm --corpus pile/train.jsonl --tokenizer 20B_tokenizer.json \\
        --data_dir data/lm/pile
    python run.py train --config configs/lm/pile.py:mamba --workdir runs/pile/mamba

Sizes: Pythia-160M (``transformer``: 12 layers x 768, 12 heads, GPT-NeoX's parallel
residual, rotary positions on a quarter of each head, untied output), RWKV-4 169M
(``rwkv``: 12 x 768) and Mamba-130M (``mamba``: 24 x 768). Any other architecture takes
12 x 768, or 24 x 768 when its blocks have no channel mixer (our choice, like Mamba's
doubling). The vocabulary is the tokenizer's (50,277 ids for GPT-NeoX-20B); the released
checkpoints pad their embeddings (Mamba to 50,280, Pythia to 50,304), so their counts are
higher by those rows.

Data and schedule: Pythia's (EleutherAI/pythia models/160M/pythia-160m.yml): 143,000
steps of 1,024 sequences of 2,048 tokens (300B tokens), 1% linear warmup, cosine decay.
The global batch is the papers'; the loop has no gradient accumulation, so on fewer
devices lower ``--config.train.batch_size`` (and raise the steps to keep the tokens).

Optimizers, from the official sources where we read them:

- transformer: pythia-160m.yml, Adam lr 6e-4 to min_lr 6e-5, betas (0.9, 0.95), eps
  1e-8, weight decay 0.1, gradient clipping 1.0.
- rwkv: BlinkDL/RWKV-LM RWKV-v4neo/train.py defaults ("6e-4 for L12-D768"): lr 6e-4 to
  1e-5, betas (0.9, 0.99), eps 1e-8, no weight decay, gradient clipping 1.0; RWKV-LM
  decays exponentially, ours is the cosine to the same end (1e-5 / 6e-4). rwkv6 takes
  the same (our choice).
- mamba and every other architecture: Pythia's optimizer (the GPT-3 recipe the Mamba
  paper follows); we did not verify the Mamba paper's own learning rate, so this is
  our choice, not a reproduction of its appendix.
"""

from configs.lm.common import lm_config, split_arg

VARIANTS = ()
DATA_DIR = "data/lm/pile"
WIDTH = 768

# The released models' shapes and block options (arch/convert reads the same ones off
# their config.json files; tests/experiments/test_lm_data.py compares them).
PAPER_MODELS = {
    "transformer": {  # Pythia-160M
        "d_model": WIDTH,
        "n_layers": 12,
        "n_heads": 12,
        "norm": "layer",
        "parallel_residual": True,
        "tie_embeddings": False,
        "channel_options": {"expand": 4, "activation": "gelu_exact"},
        "pos": "rope",
        "rope_base": 10000.0,
        "rotary_fraction": 0.25,
    },
    "rwkv": {"d_model": WIDTH, "n_layers": 12},  # RWKV-4 169M
    "mamba": {"d_model": WIDTH, "n_layers": 24},  # Mamba-130M
}
PYTHIA_OPTIMIZER = {
    "lr": 6e-4,
    "min_lr_ratio": 0.1,
    "b1": 0.9,
    "b2": 0.95,
    "eps": 1e-8,
    "weight_decay": 0.1,
    "grad_clip": 1.0,
}
RWKV_OPTIMIZER = {
    "lr": 6e-4,
    "min_lr_ratio": 1e-5 / 6e-4,
    "b1": 0.9,
    "b2": 0.99,
    "eps": 1e-8,
    "weight_decay": 0.0,
    "grad_clip": 1.0,
}


def get_config(arg=None):
    from arch.registry import ARCHS

    arch, _ = split_arg(arg, VARIANTS)
    config = lm_config(arch, DATA_DIR, seq_len=2048)
    shape = PAPER_MODELS.get(config.arch)
    if shape is None:
        mixer_only = ARCHS[config.arch].channel == "none"
        shape = {"d_model": WIDTH, "n_layers": 24 if mixer_only else 12}
    for key, value in shape.items():
        config.model[key] = value
    optimizer = RWKV_OPTIMIZER if config.arch in ("rwkv", "rwkv6") else PYTHIA_OPTIMIZER
    train = config.train
    for key, value in optimizer.items():
        train[key] = value
    train.ssm_lr = train.lr  # one rate for every parameter, as the papers' AdamW
    train.steps = 143_000
    train.batch_size = 1024
    train.warmup_steps = 1430  # 1% of the steps (pythia-160m.yml "warmup": 0.01)
    train.compute_dtype = "bfloat16"
    train.log_every = 100
    train.eval_every = 2000
    train.checkpoint_every = 1000
    config.task.options.eval_windows = 512
    return config
