"""``funcpipe validate`` on hostile inputs: bounded time and memory, exit 2, located error.

Each case runs the real command as a subprocess under a timeout and a 1 GB
address-space limit, so a hang or an unbounded allocation fails the test
instead of the machine.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from funcpipe.spec._yaml import MAX_BYTES

_LIMIT = 1 << 30
# Generous: validating any of these takes well under a second; the timeout
# only turns a hang into a failure.
_TIMEOUT = 60

_STAGES = "stages:\n  - {id: load, use: source.files, with: {path: docs}}\n"


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_LIMIT, _LIMIT))


def _validate(path: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "funcpipe", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=_TIMEOUT,
        check=False,
        preexec_fn=_limited,
        env={**os.environ, "PYTHONUTF8": "1"},
    )


def _refused(path: Path | str, fragment: str) -> None:
    proc = _validate(path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out and "MemoryError" not in out, out
    assert f"{path}:" in proc.stdout, out
    assert fragment in proc.stdout, out


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    _refused(fifo, "named pipe")


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_dev_zero_is_refused_without_reading_it() -> None:
    _refused("/dev/zero", "device")


def test_a_directory_is_refused(tmp_path: Path) -> None:
    proc = _validate(tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out
    assert str(tmp_path) in out
    assert "directory" in out


def test_a_huge_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    spec = tmp_path / "huge.yaml"
    with spec.open("wb") as f:
        # Sparse: the size is real, the disk use is not.
        f.truncate(50 * MAX_BYTES)
    _refused(spec, "too large")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_a_file_that_reports_no_size_is_read_bounded() -> None:
    # /proc files report size 0 whatever they hold; this one is not YAML.
    proc = _validate("/proc/self/status")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_long_string_aliased_many_times_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "alias.yaml"
    aliases = ", ".join(["*a"] * 15_000)
    spec.write_text(
        f"version: 1\nname: t\nparams:\n  a: &a {'x' * 100_000}\n  b: [{aliases}]\n{_STAGES}",
        encoding="utf-8",
    )
    _refused(spec, "characters of text")


def test_a_power_tower_in_a_template_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "pow.yaml"
    spec.write_text(
        "version: 1\nname: t\nstages:\n"
        '  - {id: load, use: source.files, with: {path: "{{ 2**999**999**999**999 }}"}}\n',
        encoding="utf-8",
    )
    _refused(spec, "refused by the sandbox")


@pytest.mark.parametrize(
    "template",
    [
        "{% set l = [1] * 100000 %}{% for i in l %}{% for j in l %}{% endfor %}{% endfor %}",
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
        "{% set a = 'x' * 100000 %}{{ ([a] * 100000) | join }}",
        "{{ '%0999999999d' | format(1) }}",
    ],
)
def test_templates_that_would_run_for_ever_or_fill_memory_are_refused(tmp_path: Path, template: str) -> None:
    spec = tmp_path / "bomb.yaml"
    spec.write_text(
        f'version: 1\nname: t\nstages:\n  - id: load\n    use: source.files\n    with: {{path: "{template}"}}\n',
        encoding="utf-8",
    )
    _refused(spec, "refused by the sandbox")
