"""Small helpers the test modules share."""

from __future__ import annotations

from click.testing import CliRunner, Result

from senca.cli import main


def run_cli(*args: str, expect: int | None = 0) -> Result:
    """Invoke ``senca ARGS`` in-process; check the exit code when ``expect`` is given."""
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if expect is not None:
        assert result.exit_code == expect, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result


def assert_one_line_error(result: Result, *needles: str) -> str:
    """A user error: exit 2, exactly one 'Error: ...' line on stderr naming what is wrong, no traceback."""
    assert result.exit_code == 2, f"exit {result.exit_code}: {result.stderr}"
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]
