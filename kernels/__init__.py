"""Framework-free recurrences: pure jnp functions, several implementations each.

No Flax, no configs, no tasks here. Every public function takes arrays and returns
arrays; ``impl=`` picks the implementation (see ``kernels.dispatch``).
"""
