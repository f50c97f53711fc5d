"""One tracker run in every configured tracker, each call guarded, all of them on one background thread.

A tracker is a convenience, never a dependency: when one fails (its store unwritable, its process
gone) that costs one warning on stderr and the tracker is dropped for the rest of the run, while the
others, the training run and the results on disk carry on. Nor does the loop wait for one: a log call
hands its values to the run's thread (in order; MLflow's active run is per thread, so that thread does
every call, from start to finish) and returns at once; ``finish`` waits for what is queued, up to
``FINISH_TIMEOUT_S``.

Why accelerate's tracker classes and not ``Accelerator(log_with=...)``: one Accelerator trains every
run of a study and its tracker list only grows (``end_training`` would also tear down the process
group between runs); ``Accelerator.log`` stops at the first tracker that raises; and evaluate and
analyze have no Accelerator. So this opens accelerate's classes itself, one run at a time, and calls
each tracker on its own.
"""

from __future__ import annotations

import importlib.util
import queue
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from losslens.errors import ConfigError
from losslens.tracking.kinds import PACKAGES, Kind, Where, install_hint, kind

FINISH_TIMEOUT_S = 300.0  # how long the end of a stage waits for a slow tracker to take what is queued


def check_installed(names: Iterable[str], source: str) -> None:
    """Stop (exit 2) before any work when a configured tracker's package is missing."""
    for name in names:
        if importlib.util.find_spec(PACKAGES[name]) is None:
            raise ConfigError(f"{source}: train.trackers: {name} is not installed: {install_hint(name)}")


class TrackerRun:
    """A run named ``where.run`` in each tracker that opened; every method is a no-op without trackers."""

    def __init__(self, where: Optional[Where] = None):
        self.where = where
        self.live: list[tuple[Kind, Any]] = []  # touched by the worker thread only, once open returned
        self._jobs: queue.Queue = queue.Queue()
        self._worker: Optional[threading.Thread] = None

    @classmethod
    def open(cls, names: Iterable[str], where: Where, config: Optional[dict] = None) -> "TrackerRun":
        """Start (or resume, by name) the run in each of ``names``; ``config``: its hyperparameters.
        Returns once every tracker has started or failed to."""
        run, names = cls(where), list(names)
        if names:
            run._worker = threading.Thread(target=run._serve, name=f"trackers-{where.run}", daemon=True)
            run._worker.start()
            run._submit(lambda: run._start(names, config))
            run._jobs.join()
        return run

    def _start(self, names: list[str], config: Optional[dict]) -> None:
        for name in names:
            k = kind(name)
            try:
                self.live.append((k, k.start(self.where, config)))
            except Exception as e:  # a tracker that cannot start is a warning, not a failed stage
                self._warn(k, e)

    def __bool__(self) -> bool:
        return bool(self.live)

    def log(self, values: dict[str, float], tokens: int) -> None:
        """Scalars against training tokens (``values`` is the tracker's from now on: build a new dict)."""
        self._submit(lambda: self._each(lambda k, t: k.log(t, values, tokens)))

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]], tokens: int) -> None:
        self._submit(lambda: self._each(lambda k, t: k.log_table(t, name, columns, rows, tokens)))

    def log_image(self, name: str, png: Path, tokens: int) -> None:
        self._submit(lambda: self._each(lambda k, t: k.log_image(t, name, png, tokens)))

    def flush(self) -> None:
        """Wait until what is queued has been handed to the trackers."""
        if self._worker is not None:
            self._jobs.join()

    def finish(self) -> None:
        """Close every tracker once what is queued is logged; give up on them after ``FINISH_TIMEOUT_S``."""
        if self._worker is None:
            return
        self._submit(self._finish_all)
        self._jobs.put(None)
        self._worker.join(FINISH_TIMEOUT_S)
        if self._worker.is_alive():  # a hung tracker: it is a daemon thread, so it does not hold the process
            _say(f"warning: trackers of run {self.where.run}: still busy after {FINISH_TIMEOUT_S:.0f} s; "
                 f"their last values may be missing")
        self._worker = None

    def _finish_all(self) -> None:
        self._each(lambda k, t: k.finish(t))
        self.live = []

    def _submit(self, job: Callable[[], None]) -> None:
        if self._worker is not None:
            self._jobs.put(job)

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                job()
            finally:
                self._jobs.task_done()

    def __enter__(self) -> "TrackerRun":
        return self

    def __exit__(self, *exc) -> None:
        self.finish()

    def _each(self, call: Callable[[Kind, Any], None]) -> None:
        for k, tracker in list(self.live):
            try:
                call(k, tracker)
            except Exception as e:  # see the module docstring: drop the tracker, keep going
                self.live.remove((k, tracker))
                self._warn(k, e)
                for release in (k.finish, k.abandon):  # what it holds (MLflow's active run, W&B's service)
                    try:
                        release(tracker)
                    except Exception:  # already reported; a tracker that failed may fail to close too
                        pass

    def _warn(self, k: Kind, error: Exception) -> None:
        why = " ".join(str(error).split())  # one line, however the tracker words it
        why = why if len(why) <= 300 else why[:297] + "..."
        _say(f"warning: tracker {k.name}, run {self.where.run}: {type(error).__name__}: {why}; "
             f"nothing more is logged to it in this run")


def _say(line: str) -> None:
    from tqdm.auto import tqdm  # (the config imports this package; tqdm only when there is a warning)

    tqdm.write(line, file=sys.stderr)  # on a line of its own, under the progress bar
