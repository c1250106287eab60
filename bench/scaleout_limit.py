"""One rate limit shared by Ray workers: what a throttled server sees, against the limit itself.

The local OpenAI-compatible server of the test suite answers 429 beyond
``--rate`` requests/s (token bucket, burst 3) and notes when each request
arrives. A pipeline embeds ``--docs`` one-request documents under
``rate_limit: {requests: RATE, per: 1s}``, with 1, 2 and 4 workers on one
local Ray instance (bound to 127.0.0.1). For each, the report prints the
429s, the busiest window of one second the server saw (the limit is RATE)
and the aggregate rate from the first request to the last, as a ratio of
the limit (the baseline).

Run it as ``python bench/scaleout_limit.py`` (defaults: 120 documents, 20/s).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the local servers live in the test suite

from tests.fakes import OpenAIServer  # noqa: E402
from tests.fakes.servers import Recorded, Reply  # noqa: E402

KEY = "sk-bench-scaleout"


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


def spec(rate: int) -> str:
    return f"""\
version: 1
name: limit_bench
adapters:
  embedder: {{kind: openai, model: text-embedding-3-small, dimensions: 16, base_url: "${{OPENAI_BASE_URL}}"}}
policies:
  api: {{rate_limit: {{requests: {rate}, per: 1s}}, concurrency: 4, retry: {{max_attempts: 4}}}}
stages:
  - {{id: load, use: source.files, with: {{path: docs, glob: "*.md"}}}}
  - {{id: embed, use: embed, adapter: embedder, policy: api, batch: {{size: 1}}}}
"""


def busiest_second(arrivals: list[float]) -> int:
    """The most requests that arrived in any window of one second."""
    most, j = 0, 0
    for i, t in enumerate(arrivals):
        while arrivals[j] <= t - 1.0:
            j += 1
        most = max(most, i - j + 1)
    return most


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--docs", type=int, default=120, help="documents, one request each")
    parser.add_argument("--rate", type=int, default=20, help="the limit, requests per second")
    args = parser.parse_args(argv)
    if min(args.docs, args.rate) < 1:
        parser.error("--docs and --rate must be >= 1")

    import ray

    import funcpipe

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["OPENAI_API_KEY"] = KEY
    with tempfile.TemporaryDirectory(prefix="funcpipe-limit-bench-") as tmp, TimedServer(api_key=KEY) as server:
        server.throttle(args.rate, burst=3)
        os.environ["OPENAI_BASE_URL"] = server.url
        root = Path(tmp)
        (root / "docs").mkdir()
        for i in range(args.docs):
            (root / "docs" / f"d{i:04d}.md").write_text(f"# Document {i}\n\nThe text of document {i}.\n")
        (root / "limit.yaml").write_text(spec(args.rate))
        ray.init(num_cpus=4, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
        try:
            print(f"documents: {args.docs}, limit: {args.rate} requests/s")
            for workers in (1, 2, 4):
                server.arrivals.clear()
                server.statuses.clear()
                report = funcpipe.load(root / "limit.yaml").run(
                    fresh=True, executor="ray", workers=workers, notify=lambda _line: None
                )
                arrivals = sorted(server.arrivals)
                rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
                print(
                    f"{workers} worker(s): {len(arrivals)} requests, {server.statuses.get(429, 0)} x 429, "
                    f"busiest second {busiest_second(arrivals)} (limit {args.rate}), "
                    f"{rate:.2f} requests/s = {rate / args.rate:.3f}x the limit, "
                    f"run {report.status} in {report.duration_s:.1f} s"
                )
        finally:
            ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
