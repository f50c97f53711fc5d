"""The one exception type users see: a clear, one-line message, exit code 2."""

from __future__ import annotations


class LossLensError(Exception):
    """Bad input or an unrecoverable condition, described in one line.

    The CLI prints ``error: <message>`` and exits with code 2 (a traceback only with
    ``--debug``). Messages name what is wrong and where: the file, the field, the line.
    """

    exit_code = 2


class ConfigError(LossLensError):
    """A study config that cannot be used (file and field in the message)."""


class DataError(LossLensError):
    """A corpus, tokenizer, shard or task file that cannot be used."""


class CheckpointError(LossLensError):
    """A missing, partial or inconsistent checkpoint."""


class ResultsError(LossLensError):
    """A results table (or a per-example record) that cannot be analyzed. ``line``: the table's line at
    fault, where there is one (the message then starts "PATH:LINE: ")."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line

    @classmethod
    def at(cls, path, line: int, message: str) -> ResultsError:
        return cls(f"{path}:{line}: {message}", line=int(line))


class TrainingDiverged(LossLensError):
    """The loss became NaN or infinite."""


class Preempted(Exception):
    """SIGTERM arrived during training; a checkpoint was saved and the process should exit.

    Not a ``LossLensError``: nothing is wrong with the input. ``losslens train`` catches it to say
    ``pre-empted`` on stdout and exit 143 (128 + SIGTERM, what a scheduler expects of a job it stopped),
    where a ``LossLensError`` would print ``error:`` and exit 2.
    """
