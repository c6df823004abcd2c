"""The explicit registry of tasks and ``make_task``.

A task class takes its options as keyword arguments (dataclass fields, or a plain
constructor) and validates them itself; ``make_task`` only checks the names.
"""

from __future__ import annotations

import dataclasses
import inspect

from experiments.lra.prepare import LRA_TASKS
from experiments.tasks.base import Task
from experiments.tasks.induction import InductionHeads
from experiments.tasks.lm import LanguageModeling
from experiments.tasks.mqar import MQAR
from experiments.tasks.passkey import Passkey
from experiments.tasks.selective_copy import SelectiveCopy

TASKS: dict[str, type] = {
    "mqar": MQAR,
    "selective_copy": SelectiveCopy,
    "induction_heads": InductionHeads,
    "passkey": Passkey,
    "lm": LanguageModeling,
    **LRA_TASKS,  # listops, text, retrieval, image, pathfinder, pathx
}


def task_options(task_cls: type) -> list[str]:
    """The keyword options a task class accepts."""
    if dataclasses.is_dataclass(task_cls):
        return [f.name for f in dataclasses.fields(task_cls) if f.init]
    parameters = inspect.signature(task_cls).parameters.values()
    return [p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def make_task(name: str, **options) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(sorted(TASKS))}")
    task_cls = TASKS[name]
    valid = task_options(task_cls)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for task {name!r}; "
            f"valid: {', '.join(valid)}"
        )
    return task_cls(**options)
