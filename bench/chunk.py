"""The chunker's speed on real text: MB/s and the longest stretch between two chunks, against plain slicing.

Reads the CPython standard library's top-level ``.py`` files (about 4.7 MB;
``--dir`` and ``--glob`` choose others) and cuts each with `span_bounds`, the
boundaries ``text.chunk`` uses (size 800, overlap 100 by default). The
baseline, in the same run, is the cheapest possible chunker: fixed-size
slices at the same stride. It prints both throughputs, their ratio, and the
longest time between two chunks, which bounds how long chunking holds the
event loop (chunks are made one at a time, as they are taken downstream).

Throughput is measured in CPU time (the machine is shared); the gap between
chunks in wall time, since that is what the event loop sees. With
``--before FILE`` (an earlier ``funcpipe/stages/text.py``, e.g. from
``git show REV:funcpipe/stages/text.py``) that version's `span_bounds` is
measured too, interleaved, and must give the same boundaries.

Run it as ``python bench/chunk.py``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from funcpipe.stages.text import span_bounds  # noqa: E402

Bounds = Callable[[str, int, int], Iterator[tuple[int, int]]]


def chunked(bounds: Bounds, texts: list[str], size: int, overlap: int) -> tuple[float, float, int]:
    """CPU seconds to cut every text, the longest wall-time gap between two chunks, and the chunk count."""
    worst, count = 0.0, 0
    started = time.process_time()
    for text in texts:
        last = time.perf_counter()
        for _ in bounds(text, size, overlap):
            now = time.perf_counter()
            worst = max(worst, now - last)
            last = now
            count += 1
    return time.process_time() - started, worst, count


def sliced(texts: list[str], size: int, overlap: int) -> float:
    """CPU seconds to cut every text in fixed-size slices at the same stride."""
    started = time.process_time()
    for text in texts:
        for start in range(0, len(text), size - overlap):
            _ = text[start : start + size]
    return time.process_time() - started


def load_before(path: Path) -> Bounds:
    """`span_bounds` of an earlier version of the chunker's module."""
    spec = importlib.util.spec_from_file_location("funcpipe_text_before", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    found: Bounds = module.span_bounds
    return found


def main(argv: list[str] | None = None) -> int:
    """Measure and print."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--dir", type=Path, default=Path(sysconfig.get_paths()["stdlib"]), help="the corpus directory")
    p.add_argument("--glob", default="*.py", help="files of --dir to read (not recursive)")
    p.add_argument("--size", type=int, default=800, help="chunk size")
    p.add_argument("--overlap", type=int, default=100, help="chunk overlap")
    p.add_argument("--repeat", type=int, default=3, help="best of this many rounds")
    p.add_argument("--before", type=Path, default=None, help="an earlier text.py to measure against")
    args = p.parse_args(argv)
    if args.size < 2 or not 0 <= args.overlap < args.size or args.repeat < 1:
        p.error("--size must be >= 2, 0 <= --overlap < --size, --repeat >= 1")
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in sorted(args.dir.glob(args.glob)) if f.is_file()]
    if not texts:
        p.error(f"no file matches {args.glob} in {args.dir}")
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    before = load_before(args.before) if args.before is not None else None
    rounds: list[tuple[float, float, int]] = []
    earlier: list[tuple[float, float, int]] = []
    for _ in range(args.repeat):  # interleaved, so both see the same machine
        rounds.append(chunked(span_bounds, texts, args.size, args.overlap))
        if before is not None:
            earlier.append(chunked(before, texts, args.size, args.overlap))
    base = min(sliced(texts, args.size, args.overlap) for _ in range(args.repeat))
    seconds, worst, count = min(rounds)
    print(f"corpus: {len(texts)} files, {mb:.1f} MB, {count} chunks (size {args.size}, overlap {args.overlap})")
    print(f"span_bounds: {mb / seconds:.1f} MB/s; longest gap between two chunks {worst * 1000:.2f} ms")
    print(f"fixed-size slices: {mb / base:.1f} MB/s; span_bounds at {base / seconds:.3f}x their speed")
    if before is not None:
        same = all(
            list(span_bounds(t, args.size, args.overlap)) == list(before(t, args.size, args.overlap)) for t in texts
        )
        old_seconds, old_worst, _ = min(earlier)
        print(
            f"before: {mb / old_seconds:.1f} MB/s, longest gap {old_worst * 1000:.2f} ms; "
            f"now {old_seconds / seconds:.2f}x as fast; same boundaries: {'yes' if same else 'NO'}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
