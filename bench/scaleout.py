"""Scale-out speed-up: the same CPU-bound ingest with 2 Ray workers against 1, in the same run.

The corpus is ``--docs`` Markdown files of seeded, Zipf-distributed random
words (no two alike, so the embedder's word cache helps little); the
pipeline reads, chunks and embeds them with the local ``hashing`` embedder,
which is pure Python: the work is CPU-bound. One local Ray instance (bound
to 127.0.0.1, ``--cpus`` CPUs) serves every run; each round runs the
pipeline with 1 worker, then with 2, and reports the best time of
``--repeat`` rounds for each, and their ratio. A run in this process with
the local executor is timed too, for reference.

Control: the machine's parallelism at that moment. Two plain processes
(no Ray), each running the local executor on half the corpus at the same
time, against one process on the whole of it. On a machine whose cores are
busy with other work, that ratio, not 2, is the most any executor could
reach there; the report prints both.

Run it as ``python bench/scaleout.py`` (defaults: 400 documents, 2 CPUs,
best of 2).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEED = 20261206
VOCABULARY = 50_000

SPEC = """\
version: 1
name: scaleout_bench
adapters:
  embedder: {kind: hashing, dim: 384}
stages:
  - {id: load, use: source.files, with: {path: docs, glob: "*.md"}}
  - {id: chunk, use: text.chunk, with: {size: 600, overlap: 50}}
  - {id: embed, use: embed, adapter: embedder, batch: {size: 64}}
"""


def write_corpus(root: Path, docs: int, words: int) -> None:
    """``docs`` files of ``words`` Zipf-distributed random words each, and the halves for the control."""
    rng = random.Random(SEED)
    weights = [1.0 / (rank + 1) for rank in range(VOCABULARY)]
    vocabulary = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 10))) for _ in range(VOCABULARY)]
    (root / "docs").mkdir(parents=True)
    for half in ("a", "b"):
        (root / half / "docs").mkdir(parents=True)
        (root / half / "bench.yaml").write_text(SPEC, encoding="utf-8")
    for i in range(docs):
        text = f"# Document {i}\n\n" + " ".join(rng.choices(vocabulary, weights, k=words)) + "\n"
        (root / "docs" / f"doc{i:05d}.md").write_text(text, encoding="utf-8")
        (root / ("a" if i % 2 == 0 else "b") / "docs" / f"doc{i:05d}.md").write_text(text, encoding="utf-8")
    (root / "bench.yaml").write_text(SPEC, encoding="utf-8")


def plain_processes(specs: list[Path]) -> float:
    """Seconds until separate Python processes, one per spec, have each run theirs with the local executor."""
    code = "import funcpipe, sys; r = funcpipe.load(sys.argv[1]).run(fresh=True); sys.exit(r.exit_code)"
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", code, str(spec)], stderr=subprocess.DEVNULL) for spec in specs]
    codes = [p.wait() for p in procs]
    took = time.perf_counter() - started
    if any(codes):
        raise SystemExit(f"a control process failed: exit codes {codes}")
    return took


def timed_run(spec: Path, **options: object) -> float:
    """Seconds one fresh run takes (the ledger is ignored, so every run does all the work)."""
    import funcpipe

    started = time.perf_counter()
    report = funcpipe.load(spec).run(fresh=True, notify=lambda _line: None, **options)  # type: ignore[arg-type]
    took = time.perf_counter() - started
    if report.exit_code != 0 or not report.accounting["invariant_holds"]:
        raise SystemExit(f"the run failed: {report.status}: {report.message}")
    return took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--docs", type=int, default=400, help="documents in the corpus")
    parser.add_argument("--words", type=int, default=1500, help="words per document")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument("--repeat", type=int, default=2, help="rounds; the best time of each is reported")
    args = parser.parse_args(argv)
    if min(args.docs, args.words, args.cpus, args.repeat) < 1:
        parser.error("--docs, --words, --cpus and --repeat must be >= 1")

    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with tempfile.TemporaryDirectory(prefix="funcpipe-scaleout-bench-") as tmp:
        root = Path(tmp)
        write_corpus(root, args.docs, args.words)
        spec = root / "bench.yaml"
        ray.init(num_cpus=args.cpus, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
        try:
            times: dict[str, list[float]] = {
                "local": [],
                "ray x1": [],
                "ray x2": [],
                "control: 1 process, all": [],
                "control: 2 processes, half each": [],
            }
            for _ in range(args.repeat):
                times["control: 1 process, all"].append(plain_processes([spec]))
                halves = [root / "a" / "bench.yaml", root / "b" / "bench.yaml"]
                times["control: 2 processes, half each"].append(plain_processes(halves))
                times["local"].append(timed_run(spec, executor="local"))
                times["ray x1"].append(timed_run(spec, executor="ray", workers=1))
                times["ray x2"].append(timed_run(spec, executor="ray", workers=2))
        finally:
            ray.shutdown()
    best = {name: min(values) for name, values in times.items()}
    print(f"documents: {args.docs}, words each: {args.words}, Ray CPUs: {args.cpus}, rounds: {args.repeat}")
    for name, seconds in best.items():
        print(f"{name}: {seconds:.2f} s")
    speedup = best["ray x1"] / best["ray x2"]
    verdict = "ok" if speedup >= 1.6 else "below target"
    print(f"speed-up, 2 workers against 1: {speedup:.2f}x (target >= 1.6x: {verdict})")
    print(f"2 workers against the local executor: {best['local'] / best['ray x2']:.2f}x")
    available = best["control: 1 process, all"] / best["control: 2 processes, half each"]
    print(f"control, the machine's parallelism now: 2 plain processes against 1: {available:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
