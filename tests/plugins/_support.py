"""Installing a plugin package for real, and running ``funcpipe`` with it.

A package is built and installed with pip (no network, no build isolation:
the setuptools of this environment) into a temporary directory, which the
``funcpipe`` subprocesses get on ``PYTHONPATH``; this environment stays as it
is. Its entry points are then found by `importlib.metadata` as any installed
plugin's would be.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def install(package: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Install ``tests/plugins/<package>`` into a new temporary directory and return it."""
    target = tmp_path_factory.mktemp(f"site-{package}")
    # setuptools builds in the source tree: build a copy, keep this tree clean.
    source = tmp_path_factory.mktemp(f"source-{package}") / package
    shutil.copytree(HERE / package, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=source,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


def funcpipe(sites: list[Path], *args: str, cwd: Path, python: str = "") -> subprocess.CompletedProcess[str]:
    """``funcpipe ARGS`` (or ``python -c PYTHON``) in a subprocess that sees the plugins installed in ``sites``."""
    path = os.pathsep.join(p for p in (*map(str, sites), os.environ.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "-c", python, *args] if python else [sys.executable, "-m", "funcpipe", *args]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": path},
    )
