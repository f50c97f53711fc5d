"""The ``losslens`` command: a thin face over the Python API, one subcommand per stage.

Every subcommand module exposes ``add_arguments(parser)`` and ``main(args) -> int``. Errors of
type :class:`LossLensError` print one line and exit with code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from losslens.errors import LossLensError

COMMANDS = {
    "train": ("losslens.train.cli", "pretrain every run of a study grid (or one with --run)"),
    "evaluate": ("losslens.evaluate.cli", "evaluate every checkpoint of a study into results.csv"),
    "analyze": ("losslens.analyze.cli", "thresholds, verdicts, scaling law and plots from results.csv"),
    "run": ("losslens.pipeline", "train, evaluate and analyze a study in one go"),
    "import": ("losslens.external", "declare a study from a manifest of checkpoints trained elsewhere"),
    "import-results": ("losslens.import_results", "lm-evaluation-harness result files of other labs into results.csv"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="losslens", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
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
    parser = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    if hasattr(args, "overrides"):  # key=value overrides may also follow the options
        args.overrides += [e for e in extra if "=" in e and not e.startswith("-")]
        extra = [e for e in extra if e not in args.overrides]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.main(args) or 0)
    except LossLensError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
