"""ml_collections configs: ``base.py`` holds every field; family/task files change values.

Load one with absl ``config_flags`` (``--config=configs/base.py``) or in Python with
``configs.base.get_config()`` and ``configs.base.override(config, {...})``.
"""
