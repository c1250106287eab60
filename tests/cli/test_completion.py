"""Shell completion of the ``funcpipe`` command (click's), as a shell gets it: real subprocesses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
FUNCPIPE = BIN / "funcpipe"

pytestmark = pytest.mark.slow


def _complete(variable: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FUNCPIPE)],
        env={**os.environ, "_FUNCPIPE_COMPLETE": variable, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash", "complete -o nosort -F _funcpipe_completion funcpipe"),
        ("zsh", "#compdef funcpipe"),
        ("fish", "complete --no-files --command funcpipe"),
    ],
)
def test_the_completion_script_is_printed_for_each_shell(shell: str, marker: str) -> None:
    proc = _complete(f"{shell}_source")
    assert proc.returncode == 0, proc.stderr
    assert marker in proc.stdout


def test_subcommands_and_choices_complete() -> None:
    commands = _complete("bash_complete", COMP_WORDS="funcpipe ", COMP_CWORD="1")
    assert commands.stdout.split() == [f"plain,{c}" for c in ("graph", "query", "run", "schema", "test", "validate")]
    formats = _complete("bash_complete", COMP_WORDS="funcpipe validate --format ", COMP_CWORD="3")
    assert formats.stdout.split() == ["plain,text", "plain,json", "plain,github"]
    spec = _complete("bash_complete", COMP_WORDS="funcpipe run pipe", COMP_CWORD="2")
    assert spec.stdout.split() == ["file,pipe"]  # the shell completes file names


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completes_a_subcommand_through_the_sourced_script() -> None:
    script = (
        'eval "$(_FUNCPIPE_COMPLETE=bash_source funcpipe)"\n'
        "COMP_WORDS=(funcpipe va); COMP_CWORD=1\n"
        "_funcpipe_completion funcpipe\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["validate"]
