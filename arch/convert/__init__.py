"""Weight conversion from PyTorch checkpoints (transformers and the original releases).

``arch.convert.mamba`` and ``arch.convert.rwkv`` turn a state_dict into our parameter
pytree; torch is imported only inside the loaders.
"""
