"""The CLI's one error boundary: usage errors of any click flavour, bad files, failed checks, Ctrl-C.

Each case asserts the exit code the README promises (0 ok, 1 check failed, 2 bad input or
usage, 130 interrupted) and one ``error:`` line without a traceback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer

from tatvpr_hw.cli import app, main

REPO = Path(__file__).resolve().parents[1]


def run_main(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip() and not line.startswith(("W1", "I1"))]


@pytest.mark.parametrize("argv, needle", [
    (["sim"], "Missing option '--trace'"),
    (["sim", "--bogus"], "No such option: --bogus"),
    (["sim", "--trace"], "requires an argument"),
    (["no-such-command"], "No such command"),
    (["dse", "--workers", "abc", "--space", "x", "--trace", "t", "--out", "o"], "--workers"),
    (["sim", "--trace", "/nonexistent/trace.npz"], "not found"),
])
def test_usage_errors_exit_2_with_one_line(capsys, argv, needle):
    code, lines = run_main(capsys, argv)
    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and needle in lines[0]


def test_binary_and_empty_and_folder_config(capsys, tmp_path):
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(bytes(range(128, 256)) * 3)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    for path, needle in ((binary, "not UTF-8"), (empty, "empty"), (folder, "not found")):
        code, lines = run_main(capsys, ["footprint", "--config", str(path)])
        assert code == 2, path
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines


def test_failed_check_exits_1_and_interrupt_130(capsys):
    sub = typer.Typer()

    @sub.command("fail")
    def _fail():
        raise typer.Exit(1)

    @sub.command("interrupt")
    def _interrupt():
        raise KeyboardInterrupt

    app.add_typer(sub, name="zz-test")
    try:
        assert main(["zz-test", "fail"]) == 1
        assert main(["zz-test", "interrupt"]) == 130
        assert "interrupted" in capsys.readouterr().err
    finally:
        app.registered_groups[:] = [g for g in app.registered_groups if g.name != "zz-test"]


def _default_sigint():
    """A shell that runs the suite in the background (`make test &`) starts it with SIGINT ignored,
    and a child inherits that: give the command under test the default disposition a terminal gives."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_of_a_running_command_exits_130(tmp_path):
    """A real Ctrl-C (SIGINT to the process) while a command works: exit 130, one line."""
    code = ("import sys, time, typer\n"
            "from tatvpr_hw.cli import app, main\n"
            "@app.command('zz-sleep')\n"
            "def _s():\n"
            "    print('ready', flush=True)\n"
            "    time.sleep(60)\n"
            "sys.exit(main(['zz-sleep']))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=_default_sigint)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    lines = [ln for ln in err.splitlines() if ln.strip() and "cpp_extension" not in ln]
    assert lines == ["interrupted"], err


def test_atomic_outputs_get_umask_mode_and_refuse_folders(tmp_path):
    from tatvpr_hw.errors import UserError
    from tatvpr_hw.io import write_text
    old = os.umask(0o022)
    try:
        out = write_text(tmp_path / "a" / "x.json", "{}")
        assert (out.stat().st_mode & 0o777) == 0o644  # what open() would give; mkstemp alone gives 0600
    finally:
        os.umask(old)
    with pytest.raises(UserError, match="existing folder"):
        write_text(tmp_path / "a", "x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        write_text(tmp_path / "a" / "x.json" / "y.txt", "x")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["x.json"]  # nothing half-written
