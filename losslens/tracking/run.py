"""One tracker run in every configured tracker, each call guarded.

A tracker is a convenience, never a dependency: when one fails (its store unwritable, its process
gone) that costs one warning on stderr and the tracker is dropped for the rest of the run, while the
others, the training run and the results on disk carry on.

Why accelerate's tracker classes and not ``Accelerator(log_with=...)``: one Accelerator trains every
run of a study and its tracker list only grows (``end_training`` would also tear down the process
group between runs); ``Accelerator.log`` stops at the first tracker that raises; and evaluate and
analyze have no Accelerator. So this opens accelerate's classes itself, one run at a time, and calls
each tracker on its own.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from losslens.errors import ConfigError
from losslens.tracking.kinds import PACKAGES, Kind, Where, install_hint, kind


def check_installed(names: Iterable[str], source: str) -> None:
    """Stop (exit 2) before any work when a configured tracker's package is missing."""
    for name in names:
        if importlib.util.find_spec(PACKAGES[name]) is None:
            raise ConfigError(f"{source}: train.trackers: {name} is not installed: {install_hint(name)}")


class TrackerRun:
    """A run named ``where.run`` in each tracker that opened; every method is a no-op without trackers."""

    def __init__(self, where: Optional[Where] = None):
        self.where = where
        self.live: list[tuple[Kind, Any]] = []

    @classmethod
    def open(cls, names: Iterable[str], where: Where, config: Optional[dict] = None) -> "TrackerRun":
        """Start (or resume, by name) the run in each of ``names``; ``config``: its hyperparameters."""
        run = cls(where)
        for name in names:
            k = kind(name)
            try:
                run.live.append((k, k.start(where, config)))
            except Exception as e:  # a tracker that cannot start is a warning, not a failed stage
                run._warn(k, e)
        return run

    def __bool__(self) -> bool:
        return bool(self.live)

    def log(self, values: dict[str, float], tokens: int) -> None:
        """Scalars against training tokens."""
        self._each(lambda k, t: k.log(t, values, tokens))

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]], tokens: int) -> None:
        self._each(lambda k, t: k.log_table(t, name, columns, rows, tokens))

    def log_image(self, name: str, png: Path, tokens: int) -> None:
        self._each(lambda k, t: k.log_image(t, name, png, tokens))

    def finish(self) -> None:
        self._each(lambda k, t: k.finish(t))
        self.live = []

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
                try:
                    k.finish(tracker)  # release what it holds (MLflow's active run), if it still can
                except Exception:  # already reported; a tracker that failed may fail to close too
                    pass

    def _warn(self, k: Kind, error: Exception) -> None:
        from tqdm.auto import tqdm  # (the config imports this package; tqdm only when there is a warning)

        why = " ".join(str(error).split())  # one line, however the tracker words it
        why = why if len(why) <= 300 else why[:297] + "..."
        tqdm.write(f"warning: tracker {k.name}, run {self.where.run}: {type(error).__name__}: {why}; "
                   f"nothing more is logged to it in this run", file=sys.stderr)  # on a line of its own, under the bar
