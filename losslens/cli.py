"""The ``losslens`` command: a thin face over the Python API, one subcommand per stage.

Every subcommand module exposes ``add_arguments(parser)`` and ``main(args) -> int``. Errors of
type :class:`LossLensError` print one line and exit with code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from losslens.errors import LossLensError
from losslens.threads import configure_for_shared_cpu

COMMANDS = {
    "train": ("losslens.train.cli", "pretrain every run of a study grid (or one with --run)"),
    "evaluate": ("losslens.evaluate.cli", "evaluate every checkpoint of a study into results.csv"),
    "analyze": ("losslens.analyze.cli", "thresholds, verdicts, scaling law and plots from results.csv"),
    "run": ("losslens.pipeline", "train, evaluate and analyze a study in one go"),
    "import": ("losslens.external", "declare a study from a manifest of checkpoints trained elsewhere"),
    "import-results": ("losslens.import_results", "lm-evaluation-harness result files of other labs into results.csv"),
}


class _Parser(argparse.ArgumentParser):
    """Usage mistakes in one line, like every other error (exit code 2), with where to find help."""

    def error(self, message: str):
        self.exit(2, f"error: {one_line(message)} (see {self.prog} --help)\n")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = _Parser(prog="losslens", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    # Import only the chosen command's module: `losslens analyze` must not pay for torch.
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        if name == chosen:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not {"-h", "--help"} & set(argv):
        configure_for_shared_cpu()  # before torch or numpy start their thread pools
    parser = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    if hasattr(args, "overrides"):  # key=value overrides may also follow the options
        args.overrides += [e for e in extra if "=" in e and not e.startswith("-")]
        extra = [e for e in extra if e not in args.overrides]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    module = importlib.import_module(COMMANDS[args.command][0])
    _quiet_deepspeed_cpu_notice()
    try:
        return int(module.main(args) or 0)
    except LossLensError as e:
        if args.debug:
            raise
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except (OSError, UnicodeDecodeError) as e:  # the environment, not a bug: a file we cannot read or write
        message = _os_error_line(e)
        if args.debug or message is None:
            raise
        print(f"error: {one_line(message)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def one_line(text: str) -> str:
    """The message as one line: control characters (a newline in a file name or a cell) shown escaped."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def _quiet_deepspeed_cpu_notice() -> None:
    """Drop DeepSpeed's "Setting accelerator to CPU" warning on runs that do not use DeepSpeed.

    accelerate imports DeepSpeed whenever it is installed (``extract_model_from_parallel``, under
    every ``save_pretrained``), and DeepSpeed warns on import when it finds no GPU. Only that one
    message goes: under a DeepSpeed launch, and for every other DeepSpeed message, nothing changes.
    """
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return
    logging.getLogger("DeepSpeed").addFilter(
        lambda record: not record.getMessage().startswith("Setting accelerator to CPU"))


def _os_error_line(e: Exception) -> str | None:
    """One line for an error about a named file (``None`` for one without a file: a real bug)."""
    if isinstance(e, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({e.reason} at byte {e.start})"
    if getattr(e, "filename", None) is None:
        return None
    target = getattr(e, "filename2", None) or e.filename  # a rename: where the file was going
    return f"{target}: {e.strerror or type(e).__name__}"


if __name__ == "__main__":
    sys.exit(main())
