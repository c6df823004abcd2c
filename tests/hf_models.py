"""Small random transformers models saved with ``save_pretrained``: the files a user has.

Every tensor is perturbed away from its initialisation (norm scales off 1, biases off
0, RWKV's decays and Mamba's A random), so a converter that drops or transposes one
shows up in the logits. Shared by the converter tests and the zero-shot end-to-end test.
"""

from __future__ import annotations

import os

VOCAB = 320  # >= the test BPE's 300 ids (tests/experiments/conftest.py)


def _configs(transformers):
    return {
        "gpt_neox": transformers.GPTNeoXConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=256,
            rotary_pct=0.25,  # Pythia's: 2 of each head's 8 channels rotate
            use_parallel_residual=True,
            tie_word_embeddings=False,
        ),
        "gpt_neox_sequential": transformers.GPTNeoXConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=256,
            rotary_pct=0.5,
            rotary_emb_base=500,
            use_parallel_residual=False,
            hidden_act="gelu_new",
            tie_word_embeddings=False,
        ),
        "rwkv": transformers.RwkvConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=2,
            attention_hidden_size=32,
            intermediate_size=96,
            context_length=256,
            rescale_every=0,
        ),
        "mamba": transformers.MambaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=2,
            state_size=8,
            conv_kernel=4,
            expand=2,
            use_mambapy=False,
        ),
        "mamba_untied": transformers.MambaConfig(
            vocab_size=VOCAB,
            hidden_size=16,
            num_hidden_layers=2,
            state_size=4,
            conv_kernel=3,
            expand=2,
            time_step_rank=3,
            use_conv_bias=False,
            tie_word_embeddings=False,
            use_mambapy=False,
        ),
        "rwkv_narrow": transformers.RwkvConfig(  # attention narrower than the model
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=2,
            attention_hidden_size=16,
            intermediate_size=64,
            context_length=256,
            rescale_every=0,
        ),
        "mamba2": transformers.Mamba2Config(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=2,
            state_size=8,
            expand=2,
            head_dim=16,
            num_heads=4,
            n_groups=2,
            conv_kernel=4,
            chunk_size=8,
            tie_word_embeddings=True,
        ),
    }


KINDS = (
    "gpt_neox",
    "gpt_neox_sequential",
    "rwkv",
    "rwkv_narrow",
    "mamba",
    "mamba_untied",
    "mamba2",
)


def save_random(kind: str, directory: str, seed: int = 0):
    """Write a random ``kind`` model to ``directory``; returns the torch model (eval)."""
    import torch
    import transformers

    config = _configs(transformers)[kind]
    cls = {
        "gpt_neox": transformers.GPTNeoXForCausalLM,
        "rwkv": transformers.RwkvForCausalLM,
        "mamba": transformers.MambaForCausalLM,
        "mamba2": transformers.Mamba2ForCausalLM,
    }[config.model_type]
    torch.manual_seed(seed)
    model = cls(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "time_mix" in name:  # a mixing weight in [0, 1]
                p.copy_(torch.rand_like(p))
            else:
                p.add_(0.3 * torch.randn_like(p))
    os.makedirs(directory, exist_ok=True)
    model.save_pretrained(directory)
    return model


# transformers' RWKV names -> BlinkDL's (the .pth files of BlinkDL/RWKV-LM).
BLINKDL_RENAMES = (
    ("rwkv.embeddings.", "emb."),
    ("rwkv.blocks.", "blocks."),
    ("pre_ln", "ln0"),
    ("attention.", "att."),
    ("feed_forward.", "ffn."),
    ("rwkv.ln_out", "ln_out"),
    ("time_mix_key", "time_mix_k"),
    ("time_mix_value", "time_mix_v"),
    ("time_mix_receptance", "time_mix_r"),
)


def to_blinkdl(state_dict) -> dict:
    """An RwkvForCausalLM state dict as a BlinkDL RWKV-4 ``.pth`` holds it."""
    blink = {}
    for name, tensor in state_dict.items():
        for old, new in BLINKDL_RENAMES:
            name = name.replace(old, new)
        # BlinkDL stores time_mix as [1, 1, D]
        blink[name] = tensor.reshape(1, 1, -1) if "time_mix" in name else tensor
    return blink


def torch_logits(model, tokens):
    """transformers' logits for ``tokens`` [B, L] (numpy in, numpy out)."""
    import torch

    with torch.no_grad():
        return model(torch.as_tensor(tokens), use_cache=False).logits.float().numpy()
