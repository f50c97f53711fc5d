"""The one exception type users see: a clear, one-line message, exit code 2."""


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
