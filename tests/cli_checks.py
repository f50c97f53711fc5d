"""The promise every bad-input test checks: ``losslens ARGV`` run in this process exits 2 with one
``error:`` line and no traceback."""

from __future__ import annotations

from losslens.cli import main


def exit_2(capsys, argv: list[str], *fragments: str) -> str:
    """Run ``losslens ARGV``; it must exit 2 with one ``error:`` line holding every fragment (returned)."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse refuses a flag while parsing
        code = e.code
    err = capsys.readouterr().err
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert code == 2, err[-2000:]
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in err, err[-2000:]
    assert sum(l.startswith("error: ") for l in lines) == 1, err[-2000:]
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]
