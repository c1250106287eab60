"""Scale-out on a real local Ray instance, against the local embedding server and the embedded pgvector.

One Ray instance serves the module (it takes seconds to start). The OpenAI
server throttles at `RATE` requests/s and notes when each request arrives;
the rate claims are counted there, from what it received:

- with 2, then 4, workers sharing one limit: no 429, no window of one
  second with more than `RATE` requests, and an aggregate rate of at least
  0.9 x `RATE` while they ran;
- the store holds exactly what a single-process run over the same corpus
  stores;
- a worker process killed mid-run is replaced: the store is still the
  same, and the report still accounts for every source item once.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import CliRunner

import funcpipe
from funcpipe.cli import main
from funcpipe.run import RunReport
from tests.e2e._support import fetch
from tests.fakes import OpenAIServer
from tests.fakes.servers import Recorded, Reply
from tests.pg import shared_dsn, unique_name

# Real-time rate assertions at the server: run alone, not beside another test worker (.ci/check).
pytestmark = [pytest.mark.slow, pytest.mark.exclusive]

ray = pytest.importorskip("ray")

RATE = 20
DIM = 16
DOCS = 120
"""Documents of the rate and store tests: one request each, six seconds at `RATE`."""
FEW = 40
"""Documents of the dead-letter and sync test."""
KEY = "sk-scaleout-test-key"


class TimedServer(OpenAIServer):
    """The OpenAI server, noting the arrival time of every embeddings request."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arrivals: list[float] = []
        self._times = threading.Lock()

    def handle(self, request: Recorded) -> Reply:
        if request.path.endswith("/embeddings"):
            with self._times:
                self.arrivals.append(time.monotonic())
        return super().handle(request)

    def clear(self) -> None:
        """Forget what earlier runs sent, keep the throttle."""
        with self._times:
            self.arrivals.clear()
        with self._lock:
            self.requests.clear()
            self.statuses.clear()


@dataclass
class Ran:
    """One run: its report, its table's rows, and what the server saw."""

    report: RunReport
    rows: dict[str, tuple[Any, ...]]
    arrivals: list[float]
    statuses: dict[int, int]
    project: Path


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["OPENAI_API_KEY"] = KEY  # workers inherit the driver's environment
    ray.init(num_cpus=4, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        os.environ.pop("OPENAI_API_KEY", None)


@pytest.fixture(scope="module")
def server() -> Iterator[TimedServer]:
    with TimedServer(api_key=KEY, dim=DIM) as srv:
        srv.throttle(RATE, burst=3)
        yield srv


def spec(table: str, *, fail_on: str | None = None) -> str:
    map_stage = (
        f"  - {{id: check, use: map, with: {{fn: 'fns:refuse', kwargs: {{needle: '{fail_on}'}}}}}}\n"
        if fail_on is not None
        else ""
    )
    return f"""\
version: 1
name: scale
adapters:
  embedder: {{kind: openai, model: text-embedding-3-small, dimensions: {DIM}, base_url: "${{OPENAI_BASE_URL}}"}}
  store: {{kind: pgvector, table: {table}, dsn: "${{SCALE_DSN}}"}}
policies:
  embed_api:
    rate_limit: {{requests: {RATE}, per: 1s}}
    concurrency: 4
    retry: {{max_attempts: 4, backoff: {{kind: fixed, initial: 100ms}}}}
    timeout: {{attempt: 20s}}
stages:
  - {{id: load, use: source.files, with: {{path: docs, glob: "*.md"}}}}
  - {{id: chunk, use: text.chunk, with: {{size: 2000, overlap: 0}}}}
{map_stage}  - {{id: embed, use: embed, adapter: embedder, policy: embed_api, batch: {{size: 1}}}}
  - {{id: store, use: vector.upsert, adapter: store, batch: {{size: 8, max_wait: 100ms}}}}
on_error: {{mode: continue}}
"""


def make_project(root: Path, table: str, *, fail_on: str | None = None, docs_count: int = DOCS) -> Path:
    docs = root / "docs"
    docs.mkdir(parents=True)
    for i in range(docs_count):
        (docs / f"doc{i:03d}.md").write_text(f"# Document {i}\n\nThe text of document number {i}. " * 3)
    (root / "fns.py").write_text(
        "def refuse(item, needle):\n"
        "    text = item.data['text'] if isinstance(item.data, dict) else str(item.data)\n"
        "    if needle in text:\n"
        "        raise ValueError(f'refused: {needle}')\n"
        "    return item.data\n"
    )
    path = root / "scale.yaml"
    path.write_text(spec(table, fail_on=fail_on), encoding="utf-8")
    return path


def rows_of(table: str) -> dict[str, tuple[Any, ...]]:
    found = fetch(
        shared_dsn(), f'SELECT id, source_id, text, meta::text AS meta, embedding::text AS v, origin FROM "{table}"'
    )
    return {r["id"]: (r["source_id"], r["text"], r["meta"], r["v"], r["origin"]) for r in found}


def run(server: TimedServer, root: Path, *, fail_on: str | None = None, **options: Any) -> Ran:
    table = unique_name("scale")
    path = make_project(root, table, fail_on=fail_on)
    return rerun(server, path, table, **options)


def rerun(server: TimedServer, path: Path, table: str, **options: Any) -> Ran:
    server.clear()
    os.environ["OPENAI_BASE_URL"] = server.url
    os.environ["SCALE_DSN"] = shared_dsn()
    report = funcpipe.load(path).run(notify=lambda _line: None, **options)
    return Ran(report, rows_of(table), sorted(server.arrivals), dict(server.statuses), path.parent)


@pytest.fixture(scope="module")
def single(local_ray: None, server: TimedServer, tmp_path_factory: pytest.TempPathFactory) -> Ran:
    return run(server, tmp_path_factory.mktemp("single"))


def busiest_second(arrivals: list[float]) -> int:
    """The most requests that arrived in any window of one second."""
    most, j = 0, 0
    for i, t in enumerate(arrivals):
        while arrivals[j] <= t - 1.0:
            j += 1
        most = max(most, i - j + 1)
    return most


def assert_limited(ran: Ran) -> None:
    arrivals = ran.arrivals
    assert ran.statuses.get(429, 0) == 0
    assert busiest_second(arrivals) <= RATE
    rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    assert rate >= 0.9 * RATE, f"{rate:.2f} requests/s"


def assert_accounted(ran: Ran) -> None:
    accounting = ran.report.accounting
    assert accounting["invariant_holds"] is True
    assert accounting["sources"] == accounting["done"] == DOCS
    assert ran.report.status == "ok" and ran.report.exit_code == 0


def test_a_single_process_run_is_the_reference(single: Ran) -> None:
    assert len(single.rows) == DOCS
    assert_accounted(single)


@pytest.mark.parametrize("workers", [2, 4])
def test_workers_share_one_rate_limit_and_store_the_same_rows(
    single: Ran, server: TimedServer, tmp_path: Path, workers: int
) -> None:
    ran = run(server, tmp_path, executor="ray", workers=workers)
    assert_accounted(ran)
    assert_limited(ran)
    assert ran.rows == single.rows
    embed = next(s for s in ran.report.stages if s.id == "embed")
    assert embed.calls == len(ran.arrivals) == DOCS
    assert KEY not in (ran.project / ".funcpipe" / "scale.report.json").read_text()
    shards = ran.report.executor["shards"]
    assert ran.report.executor["workers"] == len(shards) == workers
    assert sum(s["sources"] for s in shards) == DOCS


def _kill_a_worker_when(server: TimedServer, seen: int, killed: list[int]) -> threading.Thread:
    """Kill one process running a shard once the server has seen ``seen`` requests."""

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if len(server.arrivals) >= seen:
                for proc in psutil.Process().children(recursive=True):
                    try:
                        if "run_shard" in " ".join(proc.cmdline()):
                            os.kill(proc.pid, signal.SIGKILL)
                            killed.append(proc.pid)
                            return
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        continue
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_killed_worker_is_replaced_and_the_run_still_adds_up(
    single: Ran, server: TimedServer, tmp_path: Path
) -> None:
    scratch_before = set(Path(tempfile.gettempdir()).glob("funcpipe-shard*"))
    killed: list[int] = []
    watcher = _kill_a_worker_when(server, DOCS // 3, killed)
    ran = run(server, tmp_path, executor="ray", workers=2)
    watcher.join(timeout=5)
    assert killed, "no shard process was found to kill"
    assert_accounted(ran)
    assert ran.rows == single.rows
    assert ran.statuses.get(429, 0) == 0
    assert sorted(s["attempts"] for s in ran.report.executor["shards"]) == [1, 2]
    # The killed worker's scratch files are gone with the run, not left behind anywhere.
    assert not (tmp_path / ".funcpipe" / "shards").exists()
    assert set(Path(tempfile.gettempdir()).glob("funcpipe-shard*")) <= scratch_before


def test_dead_letters_are_gathered_in_one_file_and_sync_deletes_once(
    local_ray: None, server: TimedServer, tmp_path: Path
) -> None:
    table = unique_name("scale")
    path = make_project(tmp_path, table, fail_on="number 7.", docs_count=FEW)
    first = rerun(server, path, table, executor="ray", workers=2)
    assert first.report.accounting["failed"] == 1
    assert first.report.accounting["done"] == FEW - 1
    assert first.report.accounting["invariant_holds"] is True
    assert first.report.dead_lettered == 1
    dead = (tmp_path / ".funcpipe" / "scale.dead.jsonl").read_text().splitlines()
    assert len(dead) == 1 and "refused: number 7." in dead[0]
    assert first.report.run_id in dead[0]
    # Two vanished documents: the next run skips what is unchanged and deletes their rows, once.
    for gone in ("doc010.md", "doc020.md"):
        (tmp_path / "docs" / gone).unlink()
    second = rerun(server, path, table, executor="ray", workers=2)
    assert second.report.accounting["skipped"] == FEW - 3
    assert second.report.accounting["deleted"] == 2
    assert len(second.rows) == FEW - 3
    assert all(not row[2].startswith(("# Document 10\n", "# Document 20\n")) for row in second.rows.values())


def test_the_command_line_runs_on_the_ray_instance_it_finds(single: Ran, server: TimedServer, tmp_path: Path) -> None:
    table = unique_name("scale")
    path = make_project(tmp_path, table, docs_count=FEW)
    server.clear()
    result = CliRunner().invoke(
        main, ["run", str(path), "--executor", "ray", "--workers", "2", "--report", str(tmp_path / "r.json")]
    )
    assert result.exit_code == 0, result.output
    assert f"ray: {FEW} source items in 2 shards" in result.output
    assert f"{FEW} source item(s): {FEW} done" in result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["executor"]["workers"] == 2 and report["accounting"]["invariant_holds"] is True
    assert len(rows_of(table)) == FEW
    assert ray.is_initialized()  # it was not this run's to stop
