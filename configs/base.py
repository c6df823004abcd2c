"""The base config every family/task config starts from.

The schema itself (every field the training loop reads, with its default, locked so
that a misspelt key is an error) belongs to the loop and lives in
``experiments/config.py``; configs import it from here.
"""

from experiments.config import OPEN_KEYS, get_config, override, unknown_keys

__all__ = ["OPEN_KEYS", "get_config", "override", "unknown_keys"]
