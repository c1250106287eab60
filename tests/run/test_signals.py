"""Graceful shutdown and crash-safe resume, with real subprocesses and signals."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SPEC = """
version: 1
name: sig
stages:
  - {{id: load, use: source.jsonl, with: {{path: items.jsonl, text_field: text}}}}
  - {{id: work, use: map, with: {{fn: "tests.run.user_fns:slow", kwargs: {{seconds: {delay}}}}}, policy: {{concurrency: 4}}}}
  - {{id: out, use: sink.jsonl, with: {{path: out.jsonl}}, batch: {{size: 10}}}}
shutdown_timeout: {timeout}
"""


def make(tmp: Path, n: int, delay: float = 0.02, timeout: str = "30s") -> Path:
    with (tmp / "items.jsonl").open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": i, "text": f"item {i}"}) + "\n")
    spec = tmp / "sig.yaml"
    spec.write_text(SPEC.format(delay=delay, timeout=timeout))
    return spec


def start(spec: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "funcpipe", "run", str(spec), "--log-format", "json", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )


def wait_for_lines(path: Path, n: int, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and path.read_text().count("\n") >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} never reached {n} lines")


def ids(path: Path) -> list[str]:
    return [json.loads(x)["id"] for x in path.read_text().splitlines()] if path.exists() else []


def test_sigterm_drains_in_flight_work_and_resume_finishes(tmp_path: Path) -> None:
    spec = make(tmp_path, 400)
    proc = start(spec)
    wait_for_lines(tmp_path / "out.jsonl", 20)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    report = json.loads((tmp_path / ".funcpipe" / "sig.report.json").read_text())
    assert report["status"] == "interrupted"
    assert "draining" in err
    written = ids(tmp_path / "out.jsonl")
    # every source item admitted before the signal was drained to the sink: no partial batch lost
    assert report["accounting"]["done"] == report["accounting"]["sources"] == len(written) < 400
    assert len(set(written)) == len(written)

    again = start(spec)
    _, err2 = again.communicate(timeout=120)
    assert again.returncode == 0, err2
    final = json.loads(err2.strip().splitlines()[-1])
    assert final["accounting"]["skipped"] == len(written)
    assert final["accounting"]["done"] == 400 - len(written)
    everything = ids(tmp_path / "out.jsonl")
    assert len(everything) == len(set(everything)) == 400


def test_second_signal_aborts_at_once(tmp_path: Path) -> None:
    spec = make(tmp_path, 50, delay=30.0, timeout="10m")
    proc = start(spec)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 20
    assert proc.returncode == 130
    assert "aborting now" in err
    report = json.loads((tmp_path / ".funcpipe" / "sig.report.json").read_text())
    assert report["status"] == "aborted"
    assert "run again to resume" in report["message"]


def test_kill_9_at_random_points_then_resume_gives_the_uninterrupted_result(tmp_path: Path) -> None:
    reference_dir = tmp_path / "ref"
    reference_dir.mkdir()
    ref = start(make(reference_dir, 300, delay=0.002))
    assert ref.wait(timeout=120) == 0
    expected = sorted(ids(reference_dir / "out.jsonl"))

    work = tmp_path / "work"
    work.mkdir()
    spec = make(work, 300, delay=0.002)
    rng = random.Random(20261122)
    for _ in range(10):
        proc = start(spec)
        time.sleep(rng.uniform(0.3, 2.0))
        proc.kill()
        proc.wait(timeout=30)
        if proc.returncode == 0:
            break
    last = start(spec)
    _, err = last.communicate(timeout=120)
    assert last.returncode == 0, err
    got = ids(work / "out.jsonl")
    assert len(got) == len(set(got))
    assert sorted(got) == expected
