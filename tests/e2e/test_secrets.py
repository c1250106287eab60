"""Canary secrets in the environment never appear in anything funcpipe prints or writes.

The API key (``OPENAI_API_KEY``, named by the embedder's ``api_key_env``) and
the PostgreSQL password (inside ``DATABASE_URL``, interpolated into the store's
``dsn``) are canaries. Every command runs as a real subprocess against a local
OpenAI-compatible server that echoes a rejected key in full, and an embedded
PostgreSQL that checks passwords (scram-sha-256). A user callable quotes both
secrets in the exception it raises: the runner must redact them from the dead
letters, the report and the logs. Then every output, and every file of the
project (its ``.funcpipe/`` included), is searched for the canaries.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import asyncpg
import pytest

from funcpipe.render import FORMATS
from funcpipe.run.redact import REDACTED
from tests.e2e._support import env, funcpipe, replace_line
from tests.fakes import OpenAIServer
from tests.pg import start_server

KEY = f"sk-canary-{uuid.uuid4().hex}"
"""The API key the server accepts."""
WRONG_KEY = f"sk-canary-wrong-{uuid.uuid4().hex}"
"""A key the server rejects and echoes back in its 401 message."""
PASSWORD = f"pw-canary-{uuid.uuid4().hex}"
"""The database password; a wrong one is this plus a suffix, so it is found too."""
CANARIES = (KEY, WRONG_KEY, PASSWORD)
NEEDLES = tuple(c.rsplit("-", 1)[1][:12] for c in CANARIES)
"""What is searched for: the unique part of each canary, so that a truncated secret is found too."""

SPEC = """\
# A pipeline holding both secrets: a key named by api_key_env, a password inside ${DATABASE_URL}.
version: 1
name: leak
adapters:
  embedder: {kind: openai, model: text-embedding-3-small, base_url: "${OPENAI_BASE_URL}"}
  store: {kind: pgvector, table: chunks, dsn: "${DATABASE_URL}"}
  llm: {kind: extractive, max_passages: 2}
policies:
  api: {retry: {max_attempts: 2, backoff: {kind: immediate}}, rate_limit: {requests: 100, per: 1s}, concurrency: 2}
stages:
  - {id: load, use: source.files, with: {path: corpus, glob: "*.md"}}
  - {id: check, use: map, with: {fn: "leaky:check"}}
  - {id: chunk, use: text.chunk, with: {size: 200, overlap: 20}}
  - {id: embed, use: embed, adapter: embedder, policy: api, batch: {size: 8}}
  - {id: store, use: vector.upsert, adapter: store}
query: {adapter: llm, top_k: 2}
on_error: {mode: continue}
"""

LEAKY = '''\
"""A user callable that quotes the run's secrets when it fails, as careless code does."""

import os


def check(item):
    if item.meta.get("path") == "leak.md":
        raise PermissionError(f"token {os.environ['OPENAI_API_KEY']} refused for {os.environ['DATABASE_URL']}")
    return item.data
'''

CORPUS = {
    "alpha.md": "# Alpha\n\nThe alpha document is about embeddings, vectors and nearest neighbours.\n",
    "beta.md": "# Beta\n\nThe beta document is about rate limits and retries.\n\nIt has two paragraphs.\n",
    "leak.md": "# Leak\n\nThe user callable fails on this document.\n",
}

INVALID = {
    # The interpolated value fails a validator that quotes what it got.
    "table-from-env.yaml": ("  store:", '  store: {kind: pgvector, table: "${DATABASE_URL}", dsn: "${DATABASE_URL}"}'),
    # Errors on the very line holding the ${DATABASE_URL} reference.
    "bad-value-on-dsn-line.yaml": (
        "  store:",
        '  store: {kind: pgvector, table: chunks, dsn: "${DATABASE_URL}", pool_max: 0}',
    ),
    "unknown-field-on-dsn-line.yaml": ("  store:", '  store: {kind: pgvector, tabel: chunks, dsn: "${DATABASE_URL}"}'),
    # The key interpolated where a number or a kind is expected.
    "key-as-dim.yaml": ("  embedder:", '  embedder: {kind: hashing, dim: "${OPENAI_API_KEY}"}'),
    "key-as-kind.yaml": ("  embedder:", '  embedder: {kind: "${OPENAI_API_KEY}", model: m}'),
    # A key pasted where the variable's name belongs.
    "key-pasted-in-env-field.yaml": (
        "  embedder:",
        f'  embedder: {{kind: openai, model: m, base_url: "${{OPENAI_BASE_URL}}", api_key_env: "{KEY}"}}',
    ),
}
"""Invalid variants of `SPEC`: file name -> (prefix of the line replaced, new line)."""


def assert_no_canary(text: str, where: str) -> None:
    """Fail, showing the context, if any canary (or a piece of one) is in ``text``."""
    for needle in NEEDLES:
        at = text.find(needle)
        assert at < 0, f"{where} shows a secret: ...{text[max(0, at - 80) : at + 80]!r}..."


def output(proc: CompletedProcess[str]) -> str:
    """Everything a process printed."""
    return proc.stdout + proc.stderr


# -- the world: a password-checking PostgreSQL, a leaky server, a project ---------------------


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """An embedded server that checks passwords: (DSN with the right password, DSN with a wrong one)."""
    # Under /tmp: as root, the server runs as another user, which must reach its directory.
    directory = Path(f"/tmp/funcpipe-secrets-{uuid.uuid4().hex[:12]}")
    directory.mkdir()
    # Registered first, so it runs last: after the server's own cleanup at exit.
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    admin = start_server(directory)

    async def require_passwords() -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f"CREATE ROLE funcpipe LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
            # The admin keeps trust on the socket; every other role must give its password.
            (directory / "pgdata" / "pg_hba.conf").write_text(
                "local all postgres trust\nlocal all all scram-sha-256\n", encoding="utf-8"
            )
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()

    asyncio.run(require_passwords())
    user = admin.replace("postgres:@", "funcpipe:{}@", 1)
    assert user != admin, admin
    return user.format(PASSWORD), user.format(PASSWORD + "-wrong")


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAIServer]:
    """An OpenAI-compatible server accepting `KEY` that echoes any other key in its 401."""
    with OpenAIServer(api_key=KEY, echo_key=True, dim=1536, models=["text-embedding-3-small"]) as s:
        yield s


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The spec, its user module and a small corpus."""
    root = tmp_path_factory.mktemp("project")
    (root / "leak.yaml").write_text(SPEC, encoding="utf-8")
    (root / "leaky.py").write_text(LEAKY, encoding="utf-8")
    (root / "corpus").mkdir()
    for name, text in CORPUS.items():
        (root / "corpus" / name).write_text(text, encoding="utf-8")
    return root


@dataclass
class World:
    """Runs each scene once, on first use, and keeps what it printed."""

    project: Path
    server: OpenAIServer
    good_dsn: str
    wrong_dsn: str
    done: dict[str, CompletedProcess[str]] = field(default_factory=dict)

    @property
    def spec(self) -> str:
        return str(self.project / "leak.yaml")

    def environ(self, *, key: str = KEY, dsn: str | None = None) -> dict[str, str]:
        return env(OPENAI_BASE_URL=self.server.url, OPENAI_API_KEY=key, DATABASE_URL=dsn or self.good_dsn)

    def scene(self, name: str) -> CompletedProcess[str]:
        if name not in self.done:
            self.done[name] = self._play(name)
        return self.done[name]

    def _play(self, name: str) -> CompletedProcess[str]:
        spec, p = self.spec, self.project
        scenes: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
            "run": (("run", spec, "--report", str(p / "report.json")), self.environ()),
            "run-json": (
                ("run", spec, "--fresh", "--log-format", "json", "--report", str(p / "report-json.json")),
                self.environ(),
            ),
            "run-fail-fast": (
                ("run", spec, "--fresh", "--set", "on_error.mode=fail_fast", "--report", str(p / "fail-fast.json")),
                self.environ(),
            ),
            "run-wrong-key": (
                ("run", spec, "--fresh", "--set", "on_error.dead_letter=.funcpipe/auth.dead.jsonl"),
                self.environ(key=WRONG_KEY),
            ),
            "run-wrong-key-json": (
                (
                    "run",
                    spec,
                    "--fresh",
                    "--log-format",
                    "json",
                    "--set",
                    "on_error.dead_letter=.funcpipe/auth.dead.jsonl",
                ),
                self.environ(key=WRONG_KEY),
            ),
            # Traces printed by the console exporter, metrics written to a file, JSON logs: all to be searched.
            "run-observed": (
                ("run", spec, "--fresh", "--log-format", "json", "--trace", "--metrics-file", str(p / "run.prom")),
                {**self.environ(), "OTEL_TRACES_EXPORTER": "console"},
            ),
            "run-observed-wrong-key": (
                (
                    "run",
                    spec,
                    "--fresh",
                    "--log-format",
                    "json",
                    "--trace",
                    "--metrics-file",
                    str(p / "wrong-key.prom"),
                    "--set",
                    "on_error.dead_letter=.funcpipe/observed.dead.jsonl",
                ),
                {**self.environ(key=WRONG_KEY), "OTEL_TRACES_EXPORTER": "console"},
            ),
            "run-wrong-password": (("run", spec, "--fresh"), self.environ(dsn=self.wrong_dsn)),
            "run-wrong-password-json": (
                ("run", spec, "--fresh", "--log-format", "json"),
                self.environ(dsn=self.wrong_dsn),
            ),
            "run-wrong-password-quiet": (("run", spec, "--fresh", "--quiet"), self.environ(dsn=self.wrong_dsn)),
            "query": (("query", spec, "what is the alpha document about?"), self.environ()),
            "query-json": (("query", spec, "what is the alpha document about?", "--json"), self.environ()),
            "query-wrong-password": (("query", spec, "alpha?"), self.environ(dsn=self.wrong_dsn)),
            "query-wrong-key": (("query", spec, "alpha?"), self.environ(key=WRONG_KEY)),
            # Pre-flight refusals: a key over plain http, unwritable outputs, a missing key.
            "run-insecure-http": (("run", spec), {**self.environ(), "OPENAI_BASE_URL": "http://192.0.2.1/v1"}),
            "query-insecure-http": (
                ("query", spec, "alpha?"),
                {**self.environ(), "OPENAI_BASE_URL": "http://192.0.2.1/v1"},
            ),
            "run-unwritable-outputs": (
                (
                    "run",
                    spec,
                    "--set",
                    "on_error.dead_letter=leak.yaml/dead.jsonl",
                    "--report",
                    str(p / "leak.yaml" / "report.json"),
                ),
                self.environ(),
            ),
            "run-no-key": (("run", spec, "--fresh"), self.environ(key="")),
            "query-no-key": (("query", spec, "alpha?"), self.environ(key="")),
            "validate-check-env": (("validate", "--check-env", spec), self.environ(key="")),
            "dry-run": (("run", spec, "--dry-run"), self.environ()),
            "dry-run-json": (("run", spec, "--dry-run", "--log-format", "json"), self.environ()),
        }
        for fmt in FORMATS:
            out = ("-o", str(p / f"graph.{fmt}")) if fmt == "png" else ()
            scenes[f"graph-{fmt}"] = (("graph", spec, "--format", fmt, *out), self.environ())
        args, environ = scenes[name]
        if name.startswith("query") and name != "query-wrong-password":
            self.scene("run")  # something to answer from
        return funcpipe(*args, environ=environ)

    def dead_letters(self, file: str = "leak.dead.jsonl") -> list[dict[str, Any]]:
        path = self.project / ".funcpipe" / file
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def world(project: Path, server: OpenAIServer, database: tuple[str, str]) -> World:
    """The scenes, played on demand."""
    return World(project, server, *database)


# -- validate --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The valid spec and its invalid variants, outside the project (one holds a pasted key)."""
    root = tmp_path_factory.mktemp("specs")
    (root / "leaky.py").write_text(LEAKY, encoding="utf-8")
    (root / "corpus").mkdir()  # the source the specs name must exist to validate
    (root / "corpus" / "alpha.md").write_text(CORPUS["alpha.md"], encoding="utf-8")
    paths = [root / "valid.yaml"]
    paths[0].write_text(SPEC, encoding="utf-8")
    for name, (prefix, line) in INVALID.items():
        (root / name).write_text(replace_line(SPEC, prefix, line), encoding="utf-8")
        paths.append(root / name)
    return paths


@pytest.mark.parametrize("fmt", ["text", "json", "github"])
def test_validate_never_shows_a_secret(fmt: str, specs: list[Path], world: World) -> None:
    proc = funcpipe("validate", "--format", fmt, *map(str, specs), environ=world.environ())
    assert proc.returncode == 2, output(proc)
    assert_no_canary(output(proc), f"validate --format {fmt}")


def test_validate_locates_every_invalid_variant_on_its_line(specs: list[Path], world: World) -> None:
    proc = funcpipe("validate", "--format", "json", *map(str, specs), environ=world.environ())
    files = {Path(f["file"]).name: f for f in json.loads(proc.stdout)["files"]}
    assert files["valid.yaml"]["valid"]
    for name, (prefix, _) in INVALID.items():
        line = next(i for i, text in enumerate(SPEC.splitlines(), 1) if text.startswith(prefix))
        assert {e["line"] for e in files[name]["errors"]} == {line}, (name, files[name]["errors"])


def test_validate_shows_the_reference_as_written_instead_of_its_value(specs: list[Path], world: World) -> None:
    proc = funcpipe("validate", str(specs[0].parent / "table-from-env.yaml"), environ=world.environ())
    assert "${DATABASE_URL}" in proc.stdout, proc.stdout


def test_validate_of_the_valid_spec_names_it_without_secrets(specs: list[Path], world: World) -> None:
    proc = funcpipe("validate", str(specs[0]), environ=world.environ())
    assert proc.returncode == 0, output(proc)
    assert "ok (pipeline 'leak', 5 stages)" in proc.stdout
    assert_no_canary(output(proc), "validate")


# -- graph and dry run ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_graph_never_shows_a_secret(fmt: str, world: World) -> None:
    proc = world.scene(f"graph-{fmt}")
    assert proc.returncode == 0, proc.stderr
    assert_no_canary(output(proc), f"graph --format {fmt}")
    if fmt == "png":
        assert_no_canary((world.project / "graph.png").read_bytes().decode("latin-1"), "graph.png")


@pytest.mark.parametrize("scene", ["dry-run", "dry-run-json"])
def test_dry_run_never_shows_a_secret(scene: str, world: World) -> None:
    proc = world.scene(scene)
    assert proc.returncode == 0, proc.stderr
    assert_no_canary(output(proc), scene)


# -- run: outputs, reports, dead letters --------------------------------------------------------


@pytest.mark.parametrize("scene", ["run", "run-json", "run-fail-fast", "run-wrong-key", "run-wrong-key-json"])
def test_run_output_never_shows_a_secret(scene: str, world: World) -> None:
    proc = world.scene(scene)
    assert proc.returncode == 1, output(proc)  # leak.md fails in every scene
    assert_no_canary(output(proc), scene)


@pytest.mark.parametrize(
    ("scene", "prom"), [("run-observed", "run.prom"), ("run-observed-wrong-key", "wrong-key.prom")]
)
def test_traces_metrics_and_json_logs_never_show_a_secret(scene: str, prom: str, world: World) -> None:
    proc = world.scene(scene)
    assert proc.returncode == 1, output(proc)
    text = output(proc)
    assert '"name": "funcpipe.attempt"' in text  # the spans were printed, and are searched
    assert '"event": "dead_letter"' in text
    # The errors quoting a secret are in the spans and the log lines, redacted.
    assert REDACTED in text
    assert_no_canary(text, scene)
    metrics = (world.project / prom).read_text(encoding="utf-8")
    assert "funcpipe_stage_items_failed_total" in metrics
    assert_no_canary(metrics, prom)


def test_json_log_is_one_event_per_line(world: World) -> None:
    lines = world.scene("run-json").stderr.splitlines()
    events = [json.loads(line) for line in lines]
    assert {"attempt", "success", "report"} <= {e["event"] for e in events}


@pytest.mark.parametrize("report", ["report.json", "report-json.json", "fail-fast.json"])
def test_report_never_holds_a_secret(report: str, world: World) -> None:
    world.scene({"report.json": "run", "report-json.json": "run-json", "fail-fast.json": "run-fail-fast"}[report])
    assert_no_canary((world.project / report).read_text(encoding="utf-8"), report)
    assert_no_canary((world.project / ".funcpipe" / "leak.report.json").read_text(encoding="utf-8"), "state report")


def test_fail_fast_report_message_quotes_the_user_error_redacted(world: World) -> None:
    world.scene("run-fail-fast")
    report = json.loads((world.project / "fail-fast.json").read_text(encoding="utf-8"))
    assert report["status"] == "failed"
    assert "PermissionError: token [REDACTED] refused for postgresql://funcpipe:[REDACTED]@" in report["message"]


def test_user_code_quoting_secrets_is_dead_lettered_redacted(world: World) -> None:
    world.scene("run")
    dead = [d for d in world.dead_letters() if d["stage"] == "check"]
    assert dead, "the user callable's failure was not dead-lettered"
    for record in dead:
        assert record["error"]["code"] == "USER_CODE"
        assert f"token {REDACTED} refused" in record["error"]["msg"]
        assert f"token {REDACTED} refused" in record["error"]["meta"]["traceback"]
        assert_no_canary(json.dumps(record), "a dead letter")


def test_key_echoed_by_the_server_is_dead_lettered_as_auth_without_it(world: World) -> None:
    world.scene("run-wrong-key")
    dead = [d for d in world.dead_letters("auth.dead.jsonl") if d["stage"] == "embed"]
    assert {d["error"]["code"] for d in dead} == {"AUTH"}
    assert_no_canary(json.dumps(dead), "the AUTH dead letters")


# -- a wrong password, a query -------------------------------------------------------------


@pytest.mark.parametrize(
    "scene", ["run-wrong-password", "run-wrong-password-json", "run-wrong-password-quiet", "query-wrong-password"]
)
def test_wrong_password_error_says_so_without_the_password(scene: str, world: World) -> None:
    proc = world.scene(scene)
    assert proc.returncode == 1, output(proc)
    text = " ".join(output(proc).split())  # the summary table wraps long messages
    assert "password authentication failed for user" in text
    assert "funcpipe:***@" in text
    assert_no_canary(output(proc), scene)


def test_query_error_with_a_rejected_key_never_shows_it(world: World) -> None:
    proc = world.scene("query-wrong-key")
    assert proc.returncode == 1, output(proc)
    assert "AUTH" in proc.stderr
    assert_no_canary(output(proc), "query with a wrong key")


@pytest.mark.parametrize("scene", ["query", "query-json"])
def test_query_answer_never_shows_a_secret(scene: str, world: World) -> None:
    proc = world.scene(scene)
    assert proc.returncode == 0, output(proc)
    assert "alpha" in proc.stdout.lower()
    assert_no_canary(output(proc), scene)


# -- pre-flight refusals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scene", "code"),
    [
        ("run-insecure-http", 2),
        ("query-insecure-http", 2),
        ("run-unwritable-outputs", 1),
        ("run-no-key", 1),
        ("query-no-key", 1),
        ("validate-check-env", 2),
    ],
)
def test_preflight_refusals_never_show_a_secret(scene: str, code: int, world: World) -> None:
    proc = world.scene(scene)
    assert proc.returncode == code, output(proc)
    assert "Traceback" not in output(proc)
    assert_no_canary(output(proc), scene)


# -- and nothing on disk ---------------------------------------------------------------------


def test_no_file_of_the_project_holds_a_secret(world: World) -> None:
    for name in (
        "run",
        "run-json",
        "run-fail-fast",
        "run-wrong-key",
        "run-wrong-password",
        "graph-png",
        "run-insecure-http",
        "run-unwritable-outputs",
        "run-no-key",
    ):
        world.scene(name)
    state = world.project / ".funcpipe"
    files = [
        p
        for p in world.project.rglob("*")
        if p.is_file() and not p.is_symlink() and (state / "pgdata") not in p.parents
    ]
    assert state / "leak.dead.jsonl" in files and state / "ledger.sqlite" in files
    for path in files:
        assert_no_canary(path.read_bytes().decode("latin-1"), str(path.relative_to(world.project)))
