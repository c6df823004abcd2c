"""Pallas forward kernels of the recurrences (linear scan, RWKV-4 WKV, Mamba selective scan).

Each module here holds one ``pallas_call`` forward and nothing else; its helpers come
from ``kernels.pallas.common``. The ``jax.custom_vjp`` wiring that makes a kernel
differentiable (backward = recompute each time block in plain JAX) lives with the
recurrence, in ``kernels/linear_scan.py``, ``kernels/wkv.py`` and
``kernels/selective_scan.py``, which import these modules (never the other way round).

Backends: on GPU the kernels lower through the Triton path; loads and stores are rows
of a power-of-two channel block. On CPU they run with ``interpret=True`` (chosen
automatically). TPU uses Mosaic's defaults (untested here: no TPU was available).
"""
