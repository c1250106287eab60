"""The distribution: its name, the ``funcpipe`` command it installs, and the install snippets of the docs."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from importlib.metadata import distribution
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from funcpipe.cli import main

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
NAME = PYPROJECT["project"]["name"]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_PIP = re.compile(r"pip install ([^\n`]*)")


def test_the_distribution_is_not_the_unrelated_funcpipe_on_pypi() -> None:
    # `funcpipe` on PyPI is another project; ours keeps only the import package and the command.
    assert NAME != "funcpipe"
    assert PYPROJECT["project"]["scripts"] == {"funcpipe": "funcpipe.cli:main"}


def test_the_installed_distribution_provides_the_funcpipe_command() -> None:
    dist = distribution(NAME)
    assert dist.version == PYPROJECT["project"]["version"]
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts == {"funcpipe": "funcpipe.cli:main"}


def test_version_names_the_installed_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0, result.output
    assert PYPROJECT["project"]["version"] in result.output


def _install_snippets() -> list[tuple[Path, str]]:
    return [(path, m.group(1)) for path in DOCS for m in _PIP.finditer(path.read_text(encoding="utf-8"))]


def test_the_docs_have_install_snippets() -> None:
    assert any(NAME in args for _, args in _install_snippets())


@pytest.mark.parametrize(("path", "args"), _install_snippets(), ids=lambda v: v if isinstance(v, str) else v.name)
def test_every_install_snippet_installs_this_project(path: Path, args: str) -> None:
    words = shlex.split(args.split("#")[0].split("&&")[0], posix=True)
    targets = [w for w in words if not w.startswith("-")]
    assert targets, f"{path.name}: `pip install {args}` installs nothing"
    for target in targets:
        assert target == "." or target.startswith((".[", NAME)), (
            f"{path.name}: `pip install {args}` installs {target!r}, not this project ({NAME})"
        )


def _precommit_config() -> dict[str, object]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n# \.pre-commit-config\.yaml\n(.*?)```", text, re.S)
    assert block is not None, "the README has no .pre-commit-config.yaml snippet"
    config = yaml.safe_load(block.group(1))
    assert isinstance(config, dict)
    return config


def test_the_readme_pre_commit_hooks_match_the_published_ones_and_have_no_placeholder() -> None:
    (repo,) = _precommit_config()["repos"]  # type: ignore[misc]
    assert "<" not in str(repo["repo"])
    published = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    assert [(h["id"], h["entry"]) for h in repo["hooks"]] == [(h["id"], h["entry"]) for h in published]


@pytest.mark.slow
def test_the_readme_pre_commit_hook_validates_the_specs_it_selects() -> None:
    (repo,) = _precommit_config()["repos"]  # type: ignore[misc]
    hook = next(h for h in repo["hooks"] if h["id"] == "funcpipe-validate")
    files = sorted(
        p.relative_to(REPO).as_posix()
        for p in REPO.rglob("*.y*ml")
        if re.search(hook["files"], p.relative_to(REPO).as_posix())
        and not re.search(hook["exclude"], p.relative_to(REPO).as_posix())
    )
    assert files, "the hook selects no file of this repository"
    command, *args = shlex.split(hook["entry"])
    assert command == "funcpipe"
    bin_dir = Path(sys.executable).parent
    proc = subprocess.run(
        [str(bin_dir / command), *args, *files], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
