"""SIGTERM and SIGINT stop a run cleanly: a checkpoint at the current step, then exit.

SLURM, Kubernetes and cloud preemption send SIGTERM some seconds before they kill a
job; Ctrl-C sends SIGINT. While ``Guard`` is active, either signal only raises a flag;
the training loop checks it after every step, writes a checkpoint at that step and
raises ``Preempted``. ``run.py`` then exits with status 128 + the signal number (143
for SIGTERM, 130 for SIGINT, the shell's convention for "killed by that signal"), and
re-running the same command resumes to exactly the result an uninterrupted run gets.
A second signal while the checkpoint is being written kills the process at once.
"""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """Training stopped on a signal after writing a checkpoint at ``step``."""

    def __init__(self, signum: int, step: int, workdir: str):
        self.signum, self.step, self.workdir = signum, step, workdir
        name = signal.Signals(signum).name
        super().__init__(
            f"{name} received: saved a checkpoint at step {step} in {workdir}; "
            "run the same command again to resume"
        )

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class Guard:
    """Turns SIGTERM/SIGINT into a flag for the duration of a ``with`` block.

    Signal handlers can only be installed from the main thread; elsewhere (a run
    started from a worker thread) the guard does nothing and signals act as usual.
    """

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame):
        if self.signum is not None:  # second signal: stop now
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
        self.signum = signum

    def __enter__(self) -> Guard:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
