"""Weight conversion from PyTorch checkpoints (transformers and the original releases).

``load_pretrained(path)`` reads a ``save_pretrained`` directory or a BlinkDL ``.pth``
and returns (model, params, tokenizer_file); ``arch.convert.{gpt_neox, rwkv, mamba,
mamba2}`` turn one state dict into our parameter pytree. torch is imported only inside
the loaders.
"""

from arch.convert.pretrained import Pretrained, load_pretrained, read_pretrained

__all__ = ["Pretrained", "load_pretrained", "read_pretrained"]
