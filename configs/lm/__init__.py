"""Language-model configs: ``stdlib.py`` (byte-level, CPU-sized, no download) and
``pile.py`` (the papers' ~150M sizes with the GPT-NeoX-20B tokenizer, for accelerators).
``common.py`` holds what they share; ``docs/lm.md`` has the commands and the tables."""
