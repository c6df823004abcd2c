"""Framework-free recurrences: pure jnp functions, several implementations each.

No Flax, no configs, no tasks here. Every public function takes arrays and returns
arrays; ``impl=`` picks the implementation (see ``kernels.dispatch``).

One file per recurrence, holding all of its implementations (sequential reference,
associative, chunked, and the differentiable Pallas entry) and its one validation:
``linear_scan.py``, ``wkv.py``, ``selective_scan.py``. What they share lives in
``chunking.py`` (chunk layout, chunked scans, the recompute-in-backward ``custom_vjp``,
the associative operators) and ``pallas/`` (the Pallas forward kernels and their
helpers). ``aft.py`` and ``attention.py`` are the AFT and softmax-attention operations;
``ssm_kernels.py`` and ``hippo.py`` the S4 convolution kernels and their initialisation.
"""
