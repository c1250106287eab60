"""``funcpipe validate`` and ``funcpipe schema`` (funcpipe/cli/_validate.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from funcpipe.cli import main
from funcpipe.cli._validate import load_or_exit, spec_options
from funcpipe.spec.schema import schema_json
from tests.spec._support import HERE, INVALID, MINIMAL, VALID

RAG = HERE / "valid" / "rag.yaml"
BROKEN = next(p for p in INVALID if "unknown_adapter_ref" in p.name)


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_valid_file_exits_0_with_an_ok_line() -> None:
    assert _invoke("validate", str(RAG)) == (0, f"{RAG}: ok (pipeline 'rag', 4 stages)\n")


def test_all_valid_files_exit_0() -> None:
    code, output = _invoke("validate", *map(str, VALID))
    assert code == 0 and output.count(": ok (") == len(VALID)


def test_an_invalid_file_exits_2_with_located_errors_and_hints() -> None:
    code, output = _invoke("validate", str(BROKEN))
    assert code == 2
    assert output.splitlines() == [
        f"{BROKEN}:10:38: stages[1].adapter: unknown adapter 'embeder' (did you mean 'embedder'?)",
        "    hint: declare it under `adapters:`",
        "1 error in 1 of 1 file",
    ]


def test_every_error_in_every_file_is_reported() -> None:
    code, output = _invoke("validate", *map(str, INVALID[:10]), str(RAG))
    assert code == 2
    assert all(f"{path}:" in output for path in INVALID[:10])
    assert f"{RAG}: ok" in output


def test_json_format_reports_each_file_and_error() -> None:
    code, output = _invoke("validate", "--format", "json", str(RAG), str(BROKEN))
    payload = json.loads(output)
    assert code == 2 and payload["valid"] is False
    assert [f["valid"] for f in payload["files"]] == [True, False]
    assert payload["files"][1]["errors"][0] | {"hint": None} == {
        "file": str(BROKEN),
        "line": 10,
        "col": 38,
        "path": "stages[1].adapter",
        "message": "unknown adapter 'embeder' (did you mean 'embedder'?)",
        "hint": None,
    }


def test_github_format_prints_workflow_annotations() -> None:
    code, output = _invoke("validate", "--format", "github", str(BROKEN))
    assert code == 2
    assert output.startswith(f"::error file={BROKEN},line=10,col=38,title=funcpipe validate::")


def test_set_and_params_apply_to_every_file(tmp_path: Path) -> None:
    spec = _write(tmp_path, "p.yaml", MINIMAL.replace("path: docs", 'path: "{{ params.dir }}"'))
    params = _write(tmp_path, "params.yaml", "dir: docs\n")
    assert _invoke("validate", str(spec), "--params", str(params))[0] == 0
    code, output = _invoke("validate", str(spec), "--set", "params.dir=[1")
    assert code == 2 and "\n<--set>:1:12: params.dir: --set params.dir=[1: YAML syntax" in output


def test_a_missing_file_is_a_located_error(tmp_path: Path) -> None:
    code, output = _invoke("validate", str(tmp_path / "nope.yaml"))
    assert code == 2 and f"{tmp_path / 'nope.yaml'}:1:1: cannot read the file" in output


def test_schema_prints_the_schema() -> None:
    assert _invoke("schema") == (0, schema_json())


def test_schema_writes_the_schema_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    assert _invoke("schema", "-o", str(out))[0] == 0
    assert out.read_text(encoding="utf-8") == schema_json()


@click.command()
@click.argument("spec")
@spec_options
def _probe(spec: str, overrides: tuple[str, ...], params_file: Path | None) -> None:
    loaded = load_or_exit(spec, overrides, params_file)
    click.echo(loaded.spec.name)


def test_load_or_exit_returns_the_loaded_spec() -> None:
    result = CliRunner().invoke(_probe, [str(RAG), "--set", "name=renamed"])
    assert (result.exit_code, result.output) == (0, "renamed\n")


def test_load_or_exit_prints_errors_to_stderr_and_exits_2() -> None:
    result = CliRunner().invoke(_probe, [str(BROKEN)])
    assert result.exit_code == 2
    assert result.stdout == "" and "unknown adapter 'embeder'" in result.stderr


# as a real process


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "funcpipe", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


@pytest.mark.slow
def test_the_command_validates_as_a_subprocess() -> None:
    ok = _run("validate", str(RAG))
    bad = _run("validate", "--format", "github", str(BROKEN))
    assert (ok.returncode, bad.returncode) == (0, 2)
    assert bad.stdout.startswith("::error ") and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_validating_imports_no_http_database_or_terminal_library() -> None:
    probe = (
        "import sys\n"
        "from funcpipe.cli import main\n"
        "try:\n"
        f"    main(['validate', {str(HERE / 'valid' / 'every_field.yaml')!r}])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('httpx', 'asyncpg', 'rich'))\n"
        "print(heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert (proc.returncode, proc.stdout.splitlines()[-1]) == (0, "[]"), proc.stderr


CANARY = "canary-5ecret-9f3b1c"
CANARY_SPEC = """\
version: 1
name: canary
adapters:
  llm: {kind: openai, model: m, api_key_env: FUNCPIPE_CANARY_KEY}
  pg: {kind: pgvector, dsn: "${FUNCPIPE_CANARY_DSN}", table: "${FUNCPIPE_CANARY_TABLE}"}
  mem: {kind: memory, pool: "${FUNCPIPE_CANARY_DSN}"}
stages:
  - {id: load, use: source.files, with: {path: docs, max_bytes: "${FUNCPIPE_CANARY_KEY}"}}
"""


@pytest.mark.parametrize("fmt", ["text", "json", "github"])
def test_a_secret_in_the_environment_never_appears_in_validate_output(tmp_path: Path, fmt: str) -> None:
    spec = _write(tmp_path, "canary.yaml", CANARY_SPEC)
    env = {
        "FUNCPIPE_CANARY_KEY": CANARY,
        "FUNCPIPE_CANARY_DSN": f"postgresql://u:{CANARY}@h/db",
        "FUNCPIPE_CANARY_TABLE": f"{CANARY} table",
    }
    result = CliRunner(env=env).invoke(main, ["validate", "--format", fmt, str(spec)])
    assert result.exit_code == 2
    assert "${FUNCPIPE_CANARY_TABLE}" in result.output
    assert CANARY not in result.output
