"""``funcpipe validate`` in its two modes: linting without the run's environment, and
``--check-env`` for deploy jobs that require it. ``run`` keeps requiring every variable.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from funcpipe.errors import SpecErrors
from funcpipe.spec import check_spec, load_spec

REPO = Path(__file__).resolve().parents[2]
REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
DEFAULT_KEYS = ("OPENAI_API_KEY", "CO_API_KEY", "ANTHROPIC_API_KEY")


def repo_specs() -> list[Path]:
    found = [*REPO.glob("pipelines/**/*.yaml"), *REPO.glob("examples/**/*.yaml")]
    return sorted(p for p in found if not p.name.endswith(".test.yaml"))  # test files are `funcpipe test`'s


def clean_env(*texts: str, **extra: str) -> dict[str, str]:
    """This environment without any variable ``texts`` reference, nor the adapters' default keys."""
    names = {m for text in texts for m in REFERENCE.findall(text)} | set(DEFAULT_KEYS)
    names |= {m for text in texts for m in re.findall(r"_env:\s*([A-Za-z_][A-Za-z0-9_]*)", text)}
    return {**{k: v for k, v in os.environ.items() if k not in names}, **extra}


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    (tmp_path / "docs").mkdir(exist_ok=True)
    (tmp_path / "docs" / "a.md").write_text("# A\n", encoding="utf-8")
    return path


def validate(*args: str, environ: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "funcpipe", "validate", *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=cwd,
        timeout=120,
        check=False,
    )


BASE = """\
version: 1
name: env
adapters:
  embedder: {kind: hashing, dim: 64}
  store: {kind: pgvector, dsn: "${PF_TEST_DSN}"}
stages:
  - {id: load, use: source.files, with: {path: docs}}
  - {id: chunk, use: text.chunk, with: {size: 200, overlap: 20}}
  - {id: embed, use: embed, adapter: embedder}
  - {id: store, use: vector.upsert, adapter: store}
"""


# -- lint mode (the default) -------------------------------------------------------------------


def test_an_unset_variable_is_a_note_not_an_error(tmp_path: Path) -> None:
    check = check_spec(write(tmp_path, BASE), env={})
    assert check.valid, check.errors
    assert check.unset == ("PF_TEST_DSN",)
    assert (check.name, check.stages) == ("env", 4)


@pytest.mark.parametrize(
    ("line", "replacement"),
    [
        # Typed fields whose only value is unknown: nothing to say about them.
        ("  embedder:", '  embedder: {kind: hashing, dim: "${PF_DIM}"}'),
        ("  embedder:", '  embedder: {kind: "${PF_KIND}", dim: 64}'),
        ("  store:", '  store: {kind: pgvector, table: "${PF_TABLE}"}'),
        ("  - {id: chunk,", '  - {id: chunk, use: text.chunk, with: {size: "${PF_SIZE}", overlap: 20}}'),
        ("  - {id: embed,", '  - {id: embed, use: embed, adapter: "${PF_ADAPTER}"}'),
        ("  store:", '  store: {kind: pgvector, dsn: "postgresql://app:${PF_PASSWORD}@db/x"}'),
    ],
)
def test_errors_that_depend_only_on_an_unknown_value_are_not_reported(
    tmp_path: Path, line: str, replacement: str
) -> None:
    text = "".join(replacement + "\n" if x.startswith(line) else x + "\n" for x in BASE.splitlines())
    check = check_spec(write(tmp_path, text), env={"PF_TEST_DSN": "postgresql://db/x"})
    assert check.valid, check.errors
    assert len(check.unset) == 1


def test_an_unknown_value_reaching_a_field_through_params_is_not_reported(tmp_path: Path) -> None:
    text = BASE.replace("version: 1\n", 'version: 1\nparams: {size: "${PF_SIZE}"}\n').replace(
        "size: 200", 'size: "{{ params.size }}"'
    )
    check = check_spec(write(tmp_path, text), env={})
    assert check.valid, check.errors
    assert check.unset == ("PF_SIZE", "PF_TEST_DSN")


def test_every_other_error_is_still_reported(tmp_path: Path) -> None:
    text = BASE.replace("{kind: hashing, dim: 64}", '{kind: hashing, dim: "${PF_DIM}", dimm: 3}').replace(
        "size: 200", "size: 0"
    )
    check = check_spec(write(tmp_path, text), env={})
    assert not check.valid
    assert sorted(e.path for e in check.errors) == ["adapters.embedder.dimm", "stages[1].with.size"]
    assert check.unset == ("PF_DIM", "PF_TEST_DSN")


def test_a_malformed_reference_is_still_an_error(tmp_path: Path) -> None:
    check = check_spec(write(tmp_path, BASE.replace("${PF_TEST_DSN}", "${PF TEST}")), env={})
    assert [e.path for e in check.errors] == ["adapters.store.dsn"]


def test_a_variable_with_a_default_is_not_a_note(tmp_path: Path) -> None:
    check = check_spec(write(tmp_path, BASE.replace("${PF_TEST_DSN}", "${PF_TEST_DSN:-postgresql://db/x}")), env={})
    assert check.valid and check.unset == ()


def test_lint_mode_does_not_require_api_keys(tmp_path: Path) -> None:
    text = BASE.replace("{kind: hashing, dim: 64}", "{kind: openai, model: text-embedding-3-small}")
    assert check_spec(write(tmp_path, text), env={"PF_TEST_DSN": "postgresql://db/x"}).valid


# -- check-env mode ---------------------------------------------------------------------------


def test_check_env_makes_an_unset_variable_a_located_error(tmp_path: Path) -> None:
    check = check_spec(write(tmp_path, BASE), env={}, check_env=True)
    [error] = check.errors
    assert (error.line, error.col, error.path) == (5, 32, "adapters.store.dsn")
    assert "PF_TEST_DSN" in error.message
    assert check.unset == ()


@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_check_env_requires_the_default_key_at_the_adapter(tmp_path: Path, value: str | None) -> None:
    text = BASE.replace("{kind: hashing, dim: 64}", "{kind: openai, model: text-embedding-3-small}")
    env = {"PF_TEST_DSN": "postgresql://db/x"} | ({} if value is None else {"OPENAI_API_KEY": value})
    check = check_spec(write(tmp_path, text), env=env, check_env=True)
    [error] = check.errors
    assert (error.line, error.path) == (4, "adapters.embedder")
    assert "OPENAI_API_KEY" in error.message and "default" in error.message
    assert "api_key_env" in (error.hint or "")


def test_check_env_locates_a_named_key_at_its_field(tmp_path: Path) -> None:
    text = BASE.replace("{kind: hashing, dim: 64}", "{kind: openai, model: m, dimensions: 8, api_key_env: PF_KEY}")
    check = check_spec(write(tmp_path, text), env={"PF_TEST_DSN": "postgresql://db/x"}, check_env=True)
    [error] = check.errors
    assert error.path == "adapters.embedder.api_key_env"
    assert error.col == text.splitlines()[3].index("PF_KEY") + 1


def test_check_env_passes_when_everything_is_set_and_never_shows_a_value(tmp_path: Path) -> None:
    text = BASE.replace("{kind: hashing, dim: 64}", "{kind: openai, model: text-embedding-3-small}")
    env = {"PF_TEST_DSN": "postgresql://db/x", "OPENAI_API_KEY": "sk-env-modes-secret-123456"}
    assert check_spec(write(tmp_path, text), env=env, check_env=True).valid


def test_an_adapter_without_a_key_needs_none(tmp_path: Path) -> None:
    text = BASE.replace("{kind: hashing, dim: 64}", "{kind: ollama, model: nomic-embed-text, dimensions: 8}")
    assert check_spec(write(tmp_path, text), env={"PF_TEST_DSN": "postgresql://db/x"}, check_env=True).valid


# -- run keeps requiring every variable -------------------------------------------------------


def test_load_spec_for_a_run_still_requires_every_variable(tmp_path: Path) -> None:
    with pytest.raises(SpecErrors) as caught:
        load_spec(write(tmp_path, BASE), env={})
    assert [e.path for e in caught.value.errors] == ["adapters.store.dsn"]


# -- plain http --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("embedder", "valid"),
    [
        ("{kind: openai, model: m, dimensions: 8, base_url: http://192.0.2.1/v1}", False),
        ("{kind: openai, model: m, dimensions: 8, base_url: http://192.0.2.1/v1, allow_insecure_http: true}", True),
        ("{kind: openai, model: m, dimensions: 8, base_url: http://192.0.2.1/v1, api_key_env: null}", True),
        ("{kind: openai, model: m, dimensions: 8, base_url: http://localhost:8000/v1}", True),
        ("{kind: openai, model: m, dimensions: 8, base_url: https://192.0.2.1/v1}", True),
        ("{kind: ollama, model: m, dimensions: 8, base_url: http://192.0.2.1:11434}", True),
        ("{kind: ollama, model: m, dimensions: 8, base_url: http://192.0.2.1:11434, api_key_env: OLLAMA_KEY}", False),
        ("{kind: cohere, base_url: http://192.0.2.1}", False),
    ],
)
def test_a_key_over_plain_http_to_another_host_is_a_located_error(tmp_path: Path, embedder: str, valid: bool) -> None:
    text = BASE.replace("{kind: hashing, dim: 64}", embedder)
    check = check_spec(write(tmp_path, text), env={}, check_env=False)
    assert check.valid == valid, check.errors
    if not valid:
        [error] = check.errors
        assert error.path == "adapters.embedder.base_url"
        assert error.col == text.splitlines()[3].index("http://") + 1
        assert "192.0.2.1" in error.message
        assert "allow_insecure_http: true" in (error.hint or "")


def test_a_plain_http_url_from_the_environment_is_refused_where_it_is_written(tmp_path: Path) -> None:
    text = BASE.replace("{kind: hashing, dim: 64}", '{kind: openai, model: m, dimensions: 8, base_url: "${PF_URL}"}')
    with pytest.raises(SpecErrors) as caught:
        load_spec(write(tmp_path, text), env={"PF_TEST_DSN": "postgresql://db/x", "PF_URL": "http://192.0.2.1/v1"})
    [error] = caught.value.errors
    assert error.path == "adapters.embedder.base_url"
    assert "${PF_URL}" in error.message


# -- the command line ---------------------------------------------------------------------------


def test_every_spec_of_the_repository_validates_in_a_clean_environment() -> None:
    specs = repo_specs()
    assert len(specs) >= 6
    environ = clean_env(*(p.read_text(encoding="utf-8") for p in specs))
    proc = validate(*map(str, specs), environ=environ)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "examples/rag-postgres.yaml: note: DATABASE_URL is unset; it is read at run time" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_the_pre_commit_hook_passes_on_the_repository() -> None:
    hook = next(
        h
        for h in yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
        if h["id"] == "funcpipe-validate"
    )
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    files = [
        f
        for f in tracked
        if re.search(hook["files"], f) and not re.search(hook["exclude"], f) and f.endswith((".yaml", ".yml"))
    ]
    assert "examples/rag-postgres.yaml" in files and "pipelines/rag.test.yaml" not in files
    entry = hook["entry"].split()
    assert entry[:2] == ["funcpipe", "validate"]
    environ = clean_env(*((REPO / f).read_text(encoding="utf-8") for f in files))
    proc = validate(*entry[2:], *hook.get("args", []), *files, environ=environ)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_env_on_the_repository_names_what_a_deploy_needs() -> None:
    specs = [REPO / "examples" / "rag-postgres.yaml", REPO / "examples" / "rag-openai.yaml"]
    environ = clean_env(*(p.read_text(encoding="utf-8") for p in specs))
    proc = validate("--check-env", "--format", "json", *map(str, specs), environ=environ)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    files = {Path(f["file"]).name: f for f in json.loads(proc.stdout)["files"]}
    [dsn] = files["rag-postgres.yaml"]["errors"]
    assert (dsn["line"], dsn["col"], dsn["path"]) == (12, 57, "adapters.store.dsn")
    [key] = files["rag-openai.yaml"]["errors"]
    assert (key["line"], key["path"]) == (11, "adapters.embedder")
    assert "OPENAI_API_KEY" in key["message"]
    assert files["rag-openai.yaml"]["notes"] == [] and files["rag-postgres.yaml"]["unset"] == []


def test_json_output_carries_the_notes(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    proc = validate("--format", "json", str(path), environ=clean_env(BASE))
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["valid"] is True
    [entry] = payload["files"]
    assert entry["valid"] is True and entry["errors"] == []
    assert entry["unset"] == ["PF_TEST_DSN"]
    assert entry["notes"] == ["PF_TEST_DSN is unset; it is read at run time (use --check-env to require it)"]


def test_github_output_carries_the_notes_as_notices(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    proc = validate("--format", "github", str(path), environ=clean_env(BASE))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"::notice file={str(path).replace(':', '%3A').replace(',', '%2C')},title=funcpipe validate::"
        "PF_TEST_DSN is unset; it is read at run time (use --check-env to require it)"
    ]


def test_github_output_with_errors_and_notes(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("size: 200", "size: 0"))
    proc = validate("--format", "github", str(path), environ=clean_env(BASE))
    assert proc.returncode == 2
    kinds = [line.split(" ", 1)[0] for line in proc.stdout.splitlines()]
    assert kinds == ["::error", "::notice"]


def test_check_env_on_the_command_line_exits_2_with_located_errors(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    proc = validate("--check-env", str(path), environ=clean_env(BASE))
    assert proc.returncode == 2
    assert f"{path}:5:32: adapters.store.dsn: environment variable PF_TEST_DSN is not set" in proc.stdout
    assert "note:" not in proc.stdout
