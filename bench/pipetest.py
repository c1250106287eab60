"""What a scripted fault schedule costs a pipeline test in real time, against the same test without faults.

Prints, measured in one run (best of ``--repeat``):

1. the real seconds of one pipeline test (a small spec: files, chunk, embed,
   memory store) whose embedder answers at once: the baseline;
2. the same test whose embedder answers ten 429s with ``Retry-After: 30``
   first (five minutes of waiting on virtual time), its virtual seconds,
   and its real time as a ratio of the baseline's (target: under 2 s, and
   close to 1x: waiting costs no real time).

Run it as ``python bench/pipetest.py``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from funcpipe.pipetest import run_tests

SPEC = """\
version: 1
name: bench
adapters:
  embedder: {kind: hashing, dim: 384}
  store: {kind: memory}
policies:
  api:
    retry: {max_attempts: 11, backoff: {kind: fixed, initial: 100ms, max: 1m}}
stages:
  - {id: load, use: source.files, with: {path: docs, glob: "*.md"}}
  - {id: chunk, use: text.chunk, with: {size: 400, overlap: 40}}
  - {id: embed, use: embed, adapter: embedder, policy: api}
  - {id: store, use: vector.upsert, adapter: store}
"""

TEST = """\
spec: bench.yaml
tests:
  - name: {name}
    inputs: {{load: {{path: docs}}}}
    adapters:
      embedder: {embedder}
    expect:
      policy: {{embed: {{attempts: {attempts}}}}}
      report: {{status: ok}}
"""

CLEAN = "{kind: hashing, dim: 384}"
FAULTY = "{kind: scripted, dim: 384, script: [{status: 429, retry_after: 30s, times: 10}]}"


def _setup(root: Path, docs: int) -> tuple[Path, Path]:
    (root / "bench.yaml").write_text(SPEC, encoding="utf-8")
    (root / "docs").mkdir()
    for n in range(docs):
        text = f"# Document {n}\n\n" + " ".join(f"word{(n * 7 + i) % 97}" for i in range(120))
        (root / "docs" / f"d{n:03}.md").write_text(text, encoding="utf-8")
    clean = root / "clean.test.yaml"
    clean.write_text(TEST.format(name="clean", embedder=CLEAN, attempts=1), encoding="utf-8")
    faulty = root / "faulty.test.yaml"
    faulty.write_text(TEST.format(name="ten 429s", embedder=FAULTY, attempts=11), encoding="utf-8")
    return clean, faulty


def _best(path: Path, repeat: int) -> tuple[float, float]:
    """(best real seconds of the test's run, its virtual seconds)."""
    best, virtual = float("inf"), 0.0
    for _ in range(repeat):
        results = run_tests([path], jobs=1)
        [case] = results.cases
        if case.status != "passed":
            raise SystemExit(f"{path.name}: {case.status}: {[p.message for p in case.problems]}")
        best, virtual = min(best, case.duration), case.virtual
    return best, virtual


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each test; the best counts")
    parser.add_argument("--docs", type=int, default=20, help="documents the source reads")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clean, faulty = _setup(Path(tmp), args.docs)
        _best(clean, 1)  # warm imports and caches
        t0 = time.perf_counter()
        base, _ = _best(clean, args.repeat)
        real, virtual = _best(faulty, args.repeat)
        total = time.perf_counter() - t0
    verdict = "ok" if real < 2.0 else "above target"
    print(f"pipeline test, {args.docs} documents, best of {args.repeat}")
    print(f"  no faults (baseline): {base * 1000:.1f} ms real")
    print(f"  ten 429s with Retry-After 30s: {real * 1000:.1f} ms real, {virtual:.0f} s virtual")
    print(
        f"  real time / baseline: {real / base:.2f}x; virtual / real: {virtual / real:,.0f}x (target < 2 s: {verdict})"
    )
    print(f"  bench took {total:.1f} s")


if __name__ == "__main__":
    main()
