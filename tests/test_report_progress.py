"""Progress bars: tqdm.auto's, drawn on a terminal, silent under --quiet, INTERP_QUIET and when
stderr is not a terminal (pipes, CI logs); INTERP_PROGRESS=1 forces them on."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from interpcore import progress as P


class _TTY(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def clean(monkeypatch):
    monkeypatch.delenv("INTERP_QUIET", raising=False)
    monkeypatch.delenv("INTERP_PROGRESS", raising=False)
    P.set_quiet(False)
    yield monkeypatch
    P.set_quiet(False)


def _run_bar(stream, monkeypatch):
    monkeypatch.setattr(sys, "stderr", stream)
    for _ in P.progress(range(3), desc="scanning pool"):
        pass
    bar = P.progress(total=4, desc="manual bar")
    bar.update(4)
    bar.close()
    return stream.getvalue()


def test_terminal_shows_bars(clean):
    out = _run_bar(_TTY(), clean)
    assert "scanning pool" in out and "manual bar" in out


def test_not_a_terminal_is_quiet(clean):
    assert _run_bar(io.StringIO(), clean) == ""


def test_set_quiet_silences_a_terminal(clean):
    P.set_quiet(True)
    assert _run_bar(_TTY(), clean) == ""


def test_env_quiet_and_env_force(clean):
    clean.setenv("INTERP_QUIET", "1")
    assert _run_bar(_TTY(), clean) == ""
    clean.setenv("INTERP_QUIET", "0")
    clean.setenv("INTERP_PROGRESS", "1")
    assert "scanning pool" in _run_bar(io.StringIO(), clean)


class _Bare:
    """A stream with no isatty at all: tqdm cannot tell, and draws."""

    def __init__(self):
        self.parts = []

    def write(self, s):
        self.parts.append(s)

    def flush(self):
        pass

    def getvalue(self):
        return "".join(self.parts)


@pytest.mark.parametrize("stream", [_TTY, io.StringIO, _Bare])
def test_is_quiet_agrees_with_the_bars(clean, stream):
    """is_quiet (for other libraries' bars) says what tqdm decides for ours, on every stream."""
    clean.setattr(sys, "stderr", stream())
    quiet = P.is_quiet()
    drawn = _run_bar(stream(), clean) != ""
    assert quiet is not drawn
    assert quiet is (stream is io.StringIO)


def test_quiet_silences_a_stream_without_isatty(clean):
    clean.setenv("INTERP_QUIET", "1")
    clean.setenv("INTERP_PROGRESS", "1")  # quiet wins
    assert _run_bar(_Bare(), clean) == "" and P.is_quiet()


def test_bars_are_tqdm_auto(clean):
    import tqdm.auto

    clean.setenv("INTERP_PROGRESS", "1")
    bar = P.progress(total=1)
    bar.close()
    assert isinstance(bar, tqdm.auto.tqdm)


def test_cli_quiet_flag_sets_quiet(clean):
    from click.testing import CliRunner

    from interpcore.cli import cli

    res = CliRunner().invoke(cli, ["--quiet", "datasets", "list"])
    assert res.exit_code == 0, res.output
    assert P.is_quiet()


def test_piped_command_prints_no_bar():
    """A loop with a progress bar in a child whose stderr is a pipe writes nothing to it."""
    code = ("from interpcore.progress import progress\n"
            "for _ in progress(range(50), desc='LOOPBAR'): pass\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "LOOPBAR" not in proc.stderr
