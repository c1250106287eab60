"""Live progress, as drawn: ``funcpipe run`` under a real pseudo-terminal.

The run's stdout and stderr are the slave side of a pty (120 columns), as in
a terminal; the test reads the master side while the run goes, strips the
ANSI sequences, and parses the progress rows that were drawn.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SPEC = """
version: 1
name: prog
stages:
  - {{id: load, use: source.jsonl, with: {{path: items.jsonl, text_field: text}}}}
  - id: work
    use: map
    with: {{fn: "tests.run.user_fns:slow", kwargs: {{seconds: {delay}}}}}
    policy: {{concurrency: 2}}
  - {{id: out, use: sink.jsonl, with: {{path: out.jsonl}}, batch: {{size: 5}}}}
"""
STAGES = [("load", "source.jsonl"), ("work", "map"), ("out", "sink.jsonl")]

_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07]*\x07|[@-Z\\-_])")
_ROW = re.compile(
    r"^(?P<id>\S+)\s+(?P<kind>\S+)\s+\S+\s+(?P<done>\d+)/(?P<total>\d+|\?)\s+(?:(?P<pct>\d+)%)?\s*"
    r"(?:(?P<rate>[\d.]+)/s)?\s+elapsed (?P<elapsed>\d+:\d\d:\d\d) eta (?P<eta>\d+:\d\d:\d\d|-:--:--)"
    r"\s+failed (?P<failed>\d+)\s+retries (?P<retries>\d+)(?:\s+waiting (?P<waiting>\d+))?"
)
_HEARTBEAT = re.compile(r"^progress (?P<elapsed>\d+:\d\d:\d\d)  (?P<stages>.*)$")


def make(tmp: Path, n: int, delay: float) -> Path:
    with (tmp / "items.jsonl").open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": i, "text": f"item {i}"}) + "\n")
    spec = tmp / "prog.yaml"
    spec.write_text(SPEC.format(delay=delay), encoding="utf-8")
    return spec


def environ() -> dict[str, str]:
    """This environment, with a plain terminal type and no variable that forces or removes colour."""
    drop = {"NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "LINES", "TERM"}
    base = {k: v for k, v in os.environ.items() if k not in drop}
    return {**base, "TERM": "xterm-256color", "PYTHONPATH": str(REPO)}


def plain(raw: bytes) -> str:
    """What a reader sees, frame after frame: ANSI sequences removed, one line per line drawn."""
    text = _ANSI.sub("", raw.decode("utf-8", "replace"))
    return text.replace("\r\n", "\n").replace("\r", "\n")


@dataclass(frozen=True)
class Row:
    """One stage's progress bar, as drawn."""

    id: str
    kind: str
    done: int
    total: int | None
    percent: int | None
    rate: float | None
    elapsed: str
    eta: str
    failed: int
    retries: int
    waiting: int


def rows(raw: bytes) -> list[Row]:
    """Every progress row drawn, in order (the summary table's rows, boxed, do not match)."""
    ids = {sid for sid, _ in STAGES}
    out = []
    for line in plain(raw).splitlines():
        m = _ROW.match(line)
        if m and m["id"] in ids:
            out.append(
                Row(
                    m["id"],
                    m["kind"],
                    int(m["done"]),
                    None if m["total"] == "?" else int(m["total"]),
                    None if m["pct"] is None else int(m["pct"]),
                    None if m["rate"] is None else float(m["rate"]),
                    m["elapsed"],
                    m["eta"],
                    int(m["failed"]),
                    int(m["retries"]),
                    int(m["waiting"] or 0),
                )
            )
    return out


def done_of(raw: bytes, stage: str) -> list[int]:
    """The "done" values drawn for ``stage``, in order."""
    return [r.done for r in rows(raw) if r.id == stage]


class Terminal:
    """``funcpipe run`` with a pseudo-terminal as its stdout and stderr."""

    def __init__(self, *args: str, cwd: Path = REPO) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "funcpipe", "run", *args],
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=slave,
            env=environ(),
            cwd=cwd,
        )
        os.close(slave)
        self.master = master
        self.raw = b""
        self.closed = False  # the output has ended
        self._open = True  # the master side is still ours to close

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the slave side is closed, the run has ended
            data = b""
        if data:
            self.raw += data
        else:
            self.closed = True

    def read_until(self, seen: Callable[[bytes], bool], timeout: float = 120) -> None:
        """Read until ``seen(everything read)`` holds; fail if the output ends or time runs out first."""
        end = time.monotonic() + timeout
        while not seen(self.raw):
            assert not self.closed, f"the output ended first:\n{plain(self.raw)[-3000:]}"
            assert time.monotonic() < end, f"not seen in {timeout}s:\n{plain(self.raw)[-3000:]}"
            self._read(0.1)

    def finish(self, timeout: float = 120) -> int:
        """Read to the end of the output and return the exit code."""
        end = time.monotonic() + timeout
        while not self.closed and time.monotonic() < end:
            self._read(0.1)
        code = self.proc.wait(timeout=max(1.0, end - time.monotonic()))
        self._close()
        return code

    def kill(self) -> None:
        """Kill the run if it still goes, and let go of the terminal."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()

    def _close(self) -> None:
        if self._open:
            os.close(self.master)
            self._open = False


@pytest.fixture
def terminal() -> Iterator[Callable[..., Terminal]]:
    """Start runs in terminals; any still running at the end are killed."""
    started: list[Terminal] = []

    def start(*args: str) -> Terminal:
        t = Terminal(*args)
        started.append(t)
        return t

    yield start
    for t in started:
        t.kill()


N = 60


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, int]:
    """What a run of a few seconds drew on its terminal, and its exit code."""
    spec = make(tmp_path_factory.mktemp("drawn"), N, delay=0.1)
    t = Terminal(str(spec))
    try:
        code = t.finish()
    finally:
        t.kill()
    return t.raw, code


# -- on a terminal ------------------------------------------------------------------------


def test_progress_draws_one_bar_per_stage_with_its_id_and_kind(drawn: tuple[bytes, int]) -> None:
    raw, code = drawn
    assert code == 0, plain(raw)
    assert {(r.id, r.kind) for r in rows(raw)} == set(STAGES)


def test_progress_shows_the_estimated_total_of_every_stage_from_the_start(drawn: tuple[bytes, int]) -> None:
    first = rows(drawn[0])[: len(STAGES)]
    # The dry-run estimate counts the JSONL lines: every stage expects all of them.
    assert [(r.id, r.done, r.total, r.percent) for r in first] == [(sid, 0, N, 0) for sid, _ in STAGES]


def test_progress_counts_and_percentages_go_up_while_the_run_goes(drawn: tuple[bytes, int]) -> None:
    work = [r for r in rows(drawn[0]) if r.id == "work"]
    during = {r.done for r in work if 0 < r.done < N}
    assert len(during) >= 2, [r.done for r in work]
    assert [r.done for r in work] == sorted(r.done for r in work)
    for r in work:
        assert r.total == N and r.percent == round(100 * r.done / N)


def test_progress_shows_a_rate_elapsed_time_and_an_eta_while_the_run_goes(drawn: tuple[bytes, int]) -> None:
    work = [r for r in rows(drawn[0]) if r.id == "work" and 0 < r.done < N]
    timed = [r for r in work if r.rate is not None]
    assert timed, work
    # A rate is known: the ETA is the items left at that rate, drawn as H:MM:SS.
    assert all(r.eta != "-:--:--" for r in timed)
    assert all(r.rate is not None and r.rate > 0 for r in timed)
    assert {r.elapsed for r in work} - {"0:00:00"}, "the elapsed time never moved"


def test_progress_ends_with_the_final_counts_complete_and_nothing_waiting(drawn: tuple[bytes, int]) -> None:
    raw, _ = drawn
    last = {r.id: r for r in rows(raw)[-len(STAGES) :]}
    assert {sid: (r.done, r.total, r.percent, r.failed, r.retries, r.waiting) for sid, r in last.items()} == {
        "load": (N, N, 100, 0, 0, 0),
        "work": (N, N, 100, 0, 0, 0),
        "out": (N, N, 100, 0, 0, 0),
    }
    assert all(r.eta == "0:00:00" for r in last.values())


def test_progress_is_followed_by_the_summary(drawn: tuple[bytes, int]) -> None:
    text = plain(drawn[0])
    assert f"{N} source item(s): {N} done, 0 failed, 0 filtered" in text


def test_sigterm_draining_notice_is_drawn_under_the_progress(tmp_path: Path, terminal: Callable[..., Terminal]) -> None:
    spec = make(tmp_path, 2000, delay=0.05)
    t = terminal(str(spec))
    # Once items are done, the run (and its signal handlers) is under way.
    t.read_until(lambda raw: any(d > 0 for d in done_of(raw, "work")))
    t.proc.send_signal(signal.SIGTERM)
    assert t.finish() == 128 + signal.SIGTERM
    notice = " ".join(plain(t.raw).split())  # a long notice wraps
    assert re.search(r"SIGTERM: stopped reading sources; draining \d+ in-flight item\(s\)", notice), notice
    # Stopped early, the last frame keeps the estimated totals: the work was not complete.
    last = {r.id: r for r in rows(t.raw)[-len(STAGES) :]}
    assert last["load"].total == 2000 and last["load"].done < 2000


def test_items_held_by_a_rate_limit_are_shown_waiting_and_gone_at_the_end(
    tmp_path: Path, terminal: Callable[..., Terminal]
) -> None:
    spec = make(tmp_path, 30, delay=0.01)
    limited = "policy: {concurrency: 4, rate_limit: {requests: 10, per: 1s}}"
    spec.write_text(spec.read_text(encoding="utf-8").replace("policy: {concurrency: 2}", limited), encoding="utf-8")
    t = terminal(str(spec))
    assert t.finish() == 0
    work = [r for r in rows(t.raw) if r.id == "work"]
    assert max(r.waiting for r in work) >= 1
    assert work[-1].waiting == 0 and work[-1].done == 30  # no stale "waiting" in the last frame


# -- not on a terminal, or quiet ------------------------------------------------------------


def piped(spec: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``funcpipe run`` with its output to pipes, as in CI."""
    return subprocess.run(
        [sys.executable, "-m", "funcpipe", "run", str(spec), *args],
        capture_output=True,
        env=environ(),
        cwd=REPO,
        timeout=120,
        check=False,
    )


def heartbeats(stderr: bytes) -> list[dict[str, tuple[int, int]]]:
    """Each heartbeat line's ``stage -> (done, total)``."""
    out = []
    for line in stderr.decode("utf-8").splitlines():
        m = _HEARTBEAT.match(line)
        if m:
            counts = re.findall(r"(\w+) (\d+)/(\d+) \d+%", m["stages"])
            out.append({sid: (int(done), int(total)) for sid, done, total in counts})
    return out


def test_without_a_terminal_a_heartbeat_line_comes_at_the_interval(tmp_path: Path) -> None:
    spec = make(tmp_path, 40, delay=0.05)
    proc = piped(spec, "--progress-interval", "0.2")
    assert proc.returncode == 0, proc.stderr
    assert b"\x1b" not in proc.stdout + proc.stderr  # plain text, no terminal codes
    beats = heartbeats(proc.stderr)
    assert len(beats) >= 2, proc.stderr
    assert all(set(b) == {"load", "work", "out"} and all(t == 40 for _, t in b.values()) for b in beats)
    work = [b["work"][0] for b in beats]
    assert work == sorted(work) and work[0] < 40
    # A stage at work shows its rate and ETA.
    text = proc.stderr.decode("utf-8")
    lines = [x for x in text.splitlines() if x.startswith("progress ")]
    assert any(re.search(r"work \d+/40 \d+% [\d.]+/s eta \d+:\d\d:\d\d", x) for x in lines), lines
    # The summary follows the heartbeats.
    assert text.index("40 source item(s): 40 done") > text.rindex("progress ")


def test_without_a_terminal_a_short_run_prints_only_the_summary(tmp_path: Path) -> None:
    spec = make(tmp_path, 20, delay=0.01)
    proc = piped(spec)  # the default interval (10 s) is longer than the run
    assert proc.returncode == 0, proc.stderr
    assert b"\x1b" not in proc.stdout + proc.stderr
    assert b"progress " not in proc.stderr and b"rate/s" not in proc.stderr
    assert b"20 source item(s): 20 done" in proc.stderr


def test_json_logs_carry_the_heartbeat_as_progress_lines(tmp_path: Path) -> None:
    spec = make(tmp_path, 40, delay=0.05)
    proc = piped(spec, "--log-format", "json", "--progress-interval", "0.2")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stderr.decode("utf-8").splitlines()]
    beats = [x for x in lines if x["event"] == "progress"]
    assert len(beats) >= 2
    for beat in beats:
        assert set(beat["stages"]) == {"load", "work", "out"}
        assert all(s["total"] == 40 for s in beat["stages"].values())
        assert beat["message"].startswith("progress ")


def test_quiet_on_a_terminal_draws_nothing(tmp_path: Path, terminal: Callable[..., Terminal]) -> None:
    spec = make(tmp_path, 20, delay=0.01)
    t = terminal(str(spec), "--quiet")
    assert t.finish() == 0
    assert t.raw == b""


def test_quiet_on_a_terminal_shows_errors_only(tmp_path: Path, terminal: Callable[..., Terminal]) -> None:
    spec = make(tmp_path, 20, delay=0.01)
    # ``upper`` takes no keyword argument: every item fails with USER_CODE.
    text = spec.read_text(encoding="utf-8").replace("tests.run.user_fns:slow", "tests.run.user_fns:upper")
    spec.write_text(text.replace("kwargs: {seconds: 0.01}", "kwargs: {nope: 1}"), encoding="utf-8")
    t = terminal(str(spec), "--quiet")
    assert t.finish() == 1
    lines = plain(t.raw).strip().splitlines()
    # No progress, no table: only the failure summary (the spec lies outside the working directory).
    assert lines[0] == f"failed: 20 item(s) \u2192 {tmp_path / '.funcpipe' / 'prog.dead.jsonl'}"
    assert len(lines) == 2
    assert re.fullmatch(r"  work  USER_CODE \u00d720  TypeError: .*nope.* \(first of 20\)", lines[1]), lines[1]


def test_the_heartbeat_falls_silent_at_the_run_s_end() -> None:
    import io

    from funcpipe.policy.events import Event
    from funcpipe.run.accounting import StageStats
    from funcpipe.run.progress import ProgressLines

    out = io.StringIO()
    beat = ProgressLines([("load", "source.jsonl")], {"load": StageStats(outputs=3)}, out, {"load": 6}, interval=0.02)
    beat.start()
    try:
        deadline = time.monotonic() + 30
        while "progress " not in out.getvalue():
            assert time.monotonic() < deadline, "no heartbeat"
            time.sleep(0.01)
        beat(Event("run_end", code="ok"))
        written = out.getvalue()
        time.sleep(0.2)  # ten intervals
        assert out.getvalue() == written
        assert written.splitlines()[-1].endswith("load 3/6 50%")
    finally:
        beat.stop()
