"""The embedded PostgreSQL never outlives its owners, whatever kills them.

Real ``funcpipe run`` subprocesses share one state directory; some are
killed with SIGKILL at seeded points (while starting, mid-ingest, beside a
live run). After the survivors and one clean run end, no PostgreSQL process
of that ``pgdata`` may be left, and no owner record.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from funcpipe.run.resources import owner_lock
from tests.store._processes import assert_no_server_left, owner_records, postgres_processes

REPO = Path(__file__).resolve().parents[2]
ITEMS = 300

SPEC = """
version: 1
name: {name}
adapters:
  emb: {{kind: hashing, dim: 16}}
  db: {{kind: pgvector, table: {name}, index: none}}
stages:
  - {{id: load, use: source.jsonl, with: {{path: items.jsonl, text_field: text}}}}
  - id: pace
    use: map
    with: {{fn: "tests.store.user_fns:pace", kwargs: {{flag: "{flag}", seconds: 0.01, hold_from: {hold}}}}}
    policy: {{concurrency: 2}}
  - {{id: embed, use: embed, adapter: emb, batch: {{size: 8}}}}
  - {{id: store, use: vector.upsert, adapter: db, batch: {{size: 8}}}}
  - {{id: copy, use: sink.jsonl, with: {{path: {name}.jsonl}}, batch: {{size: 4}}, from: embed}}
"""


def project(tmp: Path, *names: str) -> Path:
    with (tmp / "items.jsonl").open("w") as fh:
        for i in range(ITEMS):
            fh.write(json.dumps({"n": i, "text": f"note {i} on topic {i % 5}"}) + "\n")
    flag = tmp / "go.flag"
    for name in names:
        (tmp / f"{name}.yaml").write_text(SPEC.format(name=name, flag=flag, hold=ITEMS - 10))
    return flag


def start(tmp: Path, name: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "funcpipe", "run", str(tmp / f"{name}.yaml"), "--log-format", "json", *args],
        stdout=subprocess.DEVNULL,
        stderr=(tmp / f"{name}.stderr").open("a"),
        text=True,
        env=env,
        cwd=tmp,
    )


def lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def wait_for_lines(path: Path, n: int, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, f"the run ended before {path.name} had {n} lines"
        if lines(path) >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} never reached {n} lines")


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def finish(tmp: Path, name: str, proc: subprocess.Popen[str]) -> None:
    assert proc.wait(timeout=180) == 0, (tmp / f"{name}.stderr").read_text()
    report = json.loads((tmp / ".funcpipe" / f"{name}.report.json").read_text())
    assert report["accounting"]["failed"] == 0


def test_runs_killed_at_seeded_points_then_one_clean_run_leave_no_server(tmp_path: Path) -> None:
    flag = project(tmp_path, "kills")
    pgdata = tmp_path / ".funcpipe" / "pgdata"
    flag.touch()
    finish(tmp_path, "kills", start(tmp_path, "kills"))  # initialises pgdata
    assert_no_server_left(pgdata)
    flag.unlink()

    rng = random.Random(20261204)
    killed_with_a_server = 0
    for point in ["start-up", "ingest", "start-up", "ingest", "ingest"]:
        # every trial does the whole work again
        (tmp_path / "kills.jsonl").unlink(missing_ok=True)
        proc = start(tmp_path, "kills", "--fresh")
        if point == "start-up":
            # from the interpreter's start to the server being up and the first writes
            time.sleep(rng.uniform(0.3, 2.5))
        else:
            wait_for_lines(tmp_path / "kills.jsonl", rng.randint(1, 200), proc)
        killed_with_a_server += bool(postgres_processes(pgdata))
        kill(proc)
    assert killed_with_a_server >= 3, "the kills never left a server behind: they test nothing"
    assert postgres_processes(pgdata), "a kill -9 should leave the server running until the next run"
    assert owner_records(pgdata)[0], "a kill -9 should leave its owner record until the next run"

    flag.touch()
    finish(tmp_path, "kills", start(tmp_path, "kills"))
    assert_no_server_left(pgdata)


def test_a_run_killed_beside_live_runs_leaves_them_their_server(tmp_path: Path) -> None:
    flag = project(tmp_path, "alive", "doomed", "later")
    pgdata = tmp_path / ".funcpipe" / "pgdata"
    alive = start(tmp_path, "alive")
    wait_for_lines(tmp_path / "alive.jsonl", 20, alive)
    doomed = start(tmp_path, "doomed")
    wait_for_lines(tmp_path / "doomed.jsonl", 10, doomed)
    kill(doomed)
    # a third run joins the server while the first still holds it
    later = start(tmp_path, "later")
    wait_for_lines(tmp_path / "later.jsonl", 10, later)
    # The held-back items of both runs are stored only now: the server must still be up.
    flag.touch()
    finish(tmp_path, "alive", alive)
    finish(tmp_path, "later", later)
    assert lines(tmp_path / "alive.jsonl") == lines(tmp_path / "later.jsonl") == ITEMS
    assert_no_server_left(pgdata)


def test_records_of_dead_and_recycled_pids_do_not_keep_the_server(tmp_path: Path) -> None:
    flag = project(tmp_path, "owner")
    pgdata = tmp_path / ".funcpipe" / "pgdata"
    run = start(tmp_path, "owner")
    wait_for_lines(tmp_path / "owner.jsonl", 10, run)
    dead = subprocess.Popen(["true"])
    dead.wait()
    # a live process that is no funcpipe run, under a pid a run once had
    stranger = subprocess.Popen(["sleep", "120"])
    try:
        with owner_lock(pgdata.resolve()):
            handles, owners = owner_records(pgdata)
            (pgdata / ".handle_pids.json").write_text(json.dumps([*handles, dead.pid, stranger.pid]))
            started = psutil.Process(stranger.pid).create_time()
            owners[str(stranger.pid)] = started - 3600.0
            (pgdata.parent / "pgdata.owners.json").write_text(json.dumps(owners))
        flag.touch()
        finish(tmp_path, "owner", run)
        assert_no_server_left(pgdata)
    finally:
        stranger.kill()
        stranger.wait()
