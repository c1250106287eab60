"""What counting usage and holding budgets cost per call, and how close the dry-run's token estimate comes.

Prints, measured in one run:

1. the time per call of ``PolicyRuntime.apply`` with the runner's event sink
   (events kept in a list), without a meter (the baseline), with a meter
   (usage counted, priced and reported as a ``usage`` event), and with a
   meter holding a run budget and a stage budget; best of ``--repeat``;
2. the dry-run's input-token estimate for the main job (``pipelines/rag.yaml``:
   the README and docs/, chunked at 800/100) beside the count of a real BPE
   tokenizer (Llama 2's, shipped with WordLlama) over the chunks the run
   really embeds, through a local OpenAI-compatible server that counts with
   it. Run it as ``python bench/costs.py`` (about 20 seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the local servers live in the test suite

import funcpipe  # noqa: E402
from funcpipe.core import ErrInfo, Ok, Result  # noqa: E402
from funcpipe.policy import Event, Policy, PolicyRuntime  # noqa: E402
from funcpipe.policy.budget import Meter, Spend  # noqa: E402
from funcpipe.policy.models import Budget, Price  # noqa: E402
from tests.fakes.servers import OpenAIServer  # noqa: E402

KEY = "sk-bench-costs"


async def _noop() -> Result[None, ErrInfo]:
    return Ok(None)


async def per_call(calls: int, meter: Meter | None) -> float:
    """Seconds per call of `_noop` through a runtime with the runner's event sink and ``meter``."""
    kept: list[Event] = []
    runtime = PolicyRuntime(Policy(), events=kept.append, meter=meter)
    start = time.perf_counter()
    for _ in range(calls):
        await runtime.apply(_noop, chars=800)()
    return (time.perf_counter() - start) / calls


def _meter(budgets: bool) -> Meter:
    big = Budget(requests=10**12, tokens=10**15, cost=10**9)
    scopes = [Spend(big, "run"), Spend(big, "stage embed")] if budgets else []
    return Meter(scopes=scopes, price=Price(input=0.02))


def _tokenizer() -> Any:
    from tokenizers import Tokenizer

    path = resources.files("wordllama").joinpath("tokenizers", "l2_supercat_tokenizer_config.json")
    tok = Tokenizer.from_file(str(path))
    return lambda text: len(tok.encode(text, add_special_tokens=False).ids)


def estimate_vs_tokenizer() -> tuple[int, int, int, int]:
    """``(estimated tokens, counted tokens, estimated requests, requests)`` for the main job."""
    os.environ["OPENAI_API_KEY"] = KEY
    rag = (REPO / "pipelines" / "rag.yaml").read_text(encoding="utf-8")
    with OpenAIServer(api_key=KEY, dim=16, count_tokens=_tokenizer()) as server, tempfile.TemporaryDirectory() as d:
        spec = Path(d) / "rag.yaml"
        spec.write_text(
            re.sub(
                r"(?m)^  embedder: .*$",
                f'  embedder: {{kind: openai, model: text-embedding-3-small, base_url: "{server.url}", '
                "dimensions: 16}",
                re.sub(r"(?m)^  store: .*$", "  store: {kind: memory}", rag),
            ).replace('path: ".."', f'path: "{REPO}"'),
            encoding="utf-8",
        )
        pipeline = funcpipe.load(spec)
        plan = pipeline.estimate()
        report = pipeline.run(state_dir=Path(d) / "state", notify=lambda _m: None)
    used = report.usage["embedder"]
    requests = sum(s.requests or 0 for s in plan.stages if s.id == "embed")
    return plan.tokens, used["input_tokens"], requests, used["requests"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    async def overheads() -> tuple[float, float, float]:
        base = min([await per_call(args.calls, None) for _ in range(args.repeat)])
        metered = min([await per_call(args.calls, _meter(False)) for _ in range(args.repeat)])
        budgeted = min([await per_call(args.calls, _meter(True)) for _ in range(args.repeat)])
        return base, metered, budgeted

    base, metered, budgeted = asyncio.run(overheads())
    print(f"per call, best of {args.repeat} x {args.calls:,} calls, events kept")
    print(f"  no meter: {base * 1e6:.2f} us")
    print(f"  meter (usage, price, usage event): {metered * 1e6:.2f} us ({metered / base:.2f}x)")
    print(f"  meter and two budgets: {budgeted * 1e6:.2f} us ({budgeted / base:.2f}x)")
    est, counted, est_req, req = estimate_vs_tokenizer()
    print("main job (README + docs/, chunks of 800/100), estimate vs Llama 2 BPE tokenizer")
    print(f"  input tokens: estimated {est:,}, counted {counted:,}: {est / counted:.3f}x (target within 20%)")
    print(f"  requests: estimated {est_req}, made {req}")


if __name__ == "__main__":
    main()
