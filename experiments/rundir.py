"""The run directory contract: what a finished run wrote is never moved or overwritten.

- ``config.json`` is written once, when the run starts. A later command that uses the
  directory with a different config (other than the bookkeeping fields below) stops
  before touching anything, showing the differing fields and the two ways forward.
- ``results.json`` is written once, when the run finishes; re-running a finished run
  returns it unchanged.
- Every JSON file is written atomically (a temporary file, then a rename), so a killed
  process never leaves half a file.
- Checkpoints are only set aside when they really fail to restore (``checkpoint.py``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import jax

CONFIG, RESULTS = "config.json", "results.json"
# Fields that change how a run is watched, not what it computes: they may differ when a
# run is resumed.
BOOKKEEPING = (
    "train.progress",
    "train.tensorboard",
    "train.log_every",
    "train.eval_every",
    "train.eval_steps",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.test_at_best",
    "train.resume",
    "train.time_chunk_recompute",  # memory and speed only: the same numbers
    "mesh.",
    "distributed.",
)


class RunDirError(ValueError):
    """The run directory cannot be used as asked; the message says how to proceed."""


def write_json(path: str, obj: Any) -> None:
    """Write ``obj`` as JSON atomically (process 0 only, in a multi-host run)."""
    if jax.process_index() != 0:
        return
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, default=str)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_json(path: str) -> dict:
    """A JSON file; an unreadable one is a ``RunDirError`` naming it."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as error:
        raise RunDirError(f"cannot read {path}: {error}") from None


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``; an empty dict stays a value."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def differences(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """``(field, old, new)`` for every field that changes what the run computes.

    A schema field added since ``old`` was written (absent there) that ``new`` leaves at
    its default is no change: the older code computed exactly that default, so such
    runs still resume.
    """
    a, b = flatten(old), flatten(new)
    defaults = _schema_defaults()
    out = []
    for key in sorted(set(a) | set(b)):
        if any(key == f or (f.endswith(".") and key.startswith(f)) for f in BOOKKEEPING):
            continue
        if key not in a and key in defaults and _normalise(b.get(key)) == defaults[key]:
            continue
        if _normalise(a.get(key)) != _normalise(b.get(key)):
            out.append((key, a.get(key, "(absent)"), b.get(key, "(absent)")))
    return out


def _schema_defaults() -> dict[str, Any]:
    """The base config's fields (not the free-form ones) at their defaults."""
    from experiments.config import OPEN_KEYS, get_config

    flat = flatten(get_config().to_dict())
    return {
        k: _normalise(v)
        for k, v in flat.items()
        if not any(k.startswith(o + ".") for o in OPEN_KEYS)
    }


def _normalise(value):
    """JSON turns tuples into lists: compare them alike."""
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    return value


def has_run(workdir: str) -> bool:
    return os.path.exists(os.path.join(workdir, CONFIG)) or os.path.isdir(
        os.path.join(workdir, "checkpoints")
    )


def next_free(workdir: str) -> str:
    """``workdir-2``, ``workdir-3``, ...: the first sibling that holds no run."""
    n = 2
    while os.path.exists(f"{workdir.rstrip(os.sep)}-{n}"):
        n += 1
    return f"{workdir.rstrip(os.sep)}-{n}"


def check_usable(workdir: str) -> None:
    """A directory we can create and write in, or a one-line reason why not."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise RunDirError(f"--workdir {workdir} is a file, not a directory; pass a directory path")
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as error:
        raise RunDirError(f"cannot create --workdir {workdir}: {error.strerror}") from None
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise RunDirError(
            f"--workdir {workdir} is not writable; choose a directory you can write to"
        )


def open_run(workdir: str, config: dict) -> str:
    """Make ``workdir`` ready for ``config``; returns the directory the run uses.

    A new directory gets ``config.json``. An existing run with the same config resumes.
    One with a different config raises ``RunDirError`` (nothing is touched), unless
    ``train.resume`` is False: then the run starts in the first free ``workdir-N``.
    """
    check_usable(workdir)
    path = os.path.join(workdir, CONFIG)
    if not has_run(workdir):
        write_json(path, config)
        return workdir
    resume = config.get("train", {}).get("resume", True)
    if not resume:
        new = next_free(workdir)
        print(f"train.resume=False: {workdir} holds a run; starting a new one in {new}")
        return open_run(new, {**config, "train": {**config["train"], "resume": True}})
    if not os.path.exists(path):
        raise RunDirError(
            f"{workdir} holds checkpoints but no {CONFIG}, so they cannot be checked against "
            "this config; use a new --workdir"
        )
    diff = differences(read_json(path), config)
    if diff:
        shown = "; ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in diff[:8])
        more = f" (and {len(diff) - 8} more)" if len(diff) > 8 else ""
        raise RunDirError(
            f"{workdir} holds a run made with a different config ({shown}{more}); nothing "
            "was changed. Use a new --workdir, or add --config.train.resume=False to start "
            f"a new run beside it ({next_free(workdir)})"
        )
    return workdir


def finished_results(workdir: str, steps: int) -> dict | None:
    """The results of a finished run of ``steps`` steps in ``workdir``, else None."""
    path = os.path.join(workdir, RESULTS)
    if not os.path.exists(path):
        return None
    results = read_json(path)
    return results if results.get("steps") == steps else None
