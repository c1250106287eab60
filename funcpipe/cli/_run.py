"""``funcpipe run`` and ``funcpipe query``."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

import funcpipe
from funcpipe.cli._validate import pipeline_or_exit, spec_options
from funcpipe.errors import FuncpipeError, SpecError

if TYPE_CHECKING:
    from funcpipe import Pipeline


def _silent(message: str) -> None:
    """``--quiet``: status lines are not shown (failures and errors still are)."""


def _pipeline(spec: Path, overrides: Sequence[str], params_file: Path | None, log_format: str) -> Pipeline:
    """The pipeline, or its spec's errors on stderr (JSON lines under ``--log-format json``) and exit code 2."""
    if log_format != "json":
        return pipeline_or_exit(spec, overrides, params_file)
    from funcpipe.run.logging import spec_error_events

    try:
        return funcpipe.load(spec, set=overrides, params=params_file)
    except SpecError as exc:
        for line in spec_error_events([exc]):
            click.echo(line, err=True)
        sys.exit(SpecError.exit_code)


def _totals(pipeline: Pipeline) -> dict[str, int] | None:
    """Per stage, the items the dry-run estimate expects it to pass on; None if it cannot tell."""
    try:
        return {s.id: s.outputs for s in pipeline.estimate().stages}
    except (OSError, ValueError, FuncpipeError):
        return None  # a source the run will report on properly; progress goes without totals


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@spec_options
@click.option(
    "--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the JSON report here."
)
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress and no table; failures and errors are still shown.")
@click.option("--fresh", is_flag=True, help="Ignore what earlier runs recorded as done.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for jitter and sampling.")
@click.option("--shutdown-timeout", type=float, default=None, help="Seconds in-flight work gets after a signal.")
@click.option("--dry-run", is_flag=True, help="Print the plan and an estimate; call nothing.")
@click.option(
    "--latency", type=float, default=0.1, show_default=True, help="Dry run: assumed seconds per external call."
)
@click.option("--force", is_flag=True, help="Start even when the estimate exceeds a budget.")
@click.option(
    "--trace/--no-trace",
    default=None,
    help="Send OpenTelemetry traces over OTLP/HTTP (endpoint from OTEL_EXPORTER_OTLP_ENDPOINT). "
    "Default: when OTEL_TRACES_EXPORTER or an OTLP endpoint variable is set.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus metrics on /metrics at this port while the run goes (0: any free port).",
)
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True, help="The address the metrics server listens on."
)
@click.option(
    "--metrics-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the metrics here at the end (node_exporter textfile-collector format; name it *.prom).",
)
@click.option(
    "--progress-interval",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds between progress lines when stderr is not a terminal.",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default=None,
    help="Where the work runs: one process, or shards across Ray workers (default: the spec's executor).",
)
@click.option("--address", default=None, help="Ray: the cluster to join (ray://host:10001); none starts one locally.")
@click.option(
    "--workers",
    type=click.IntRange(1, 1024),
    default=None,
    help="Ray: how many shards run at once (default: the cluster's CPUs).",
)
def run(
    spec: Path,
    overrides: tuple[str, ...],
    params_file: Path | None,
    report_path: Path | None,
    log_format: str,
    quiet: bool,
    fresh: bool,
    seed: int,
    shutdown_timeout: float | None,
    dry_run: bool,
    latency: float,
    force: bool,
    trace: bool | None,
    metrics_port: int | None,
    metrics_host: str,
    metrics_file: Path | None,
    progress_interval: float,
    executor: str | None,
    address: str | None,
    workers: int | None,
) -> None:
    """Run the pipeline in SPEC.

    Exit codes: 0 every item done; 1 some items failed (see the dead-letter
    file) or the run failed; 2 the spec is invalid; 3 stopped by its budget
    (run again to resume); 4 not started: the estimate exceeds a budget
    (--force starts it); 130 or 143 stopped by SIGINT or SIGTERM.
    """
    pipeline = _pipeline(spec, overrides, params_file, log_format)
    if dry_run:
        plan = pipeline.estimate(latency=latency, fresh=fresh)
        if log_format == "json":
            click.echo(json.dumps(plan.to_json(), sort_keys=True))
        else:
            plan.print(sys.stdout)
        return

    from funcpipe.run.report import print_failures, print_summary

    try:
        session = pipeline.session(
            report_path=report_path,
            fresh=fresh,
            seed=seed,
            handle_signals=True,
            shutdown_timeout=shutdown_timeout,
            notify=_silent if quiet else None,
            force=force,
            trace=trace,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
            metrics_file=metrics_file,
            executor="ray" if executor == "ray" else "local" if executor == "local" else None,
            address=address,
            workers=workers,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    stages = [(s.id, s.use) for s in session.stages]
    live = None
    heartbeat = None
    log = None
    if log_format == "json":
        from funcpipe.run.logging import JsonEventLog

        log = JsonEventLog(sys.stderr, redact=session.redact, run_id=session.run_id, pipeline=pipeline.name)
    if not quiet:
        from funcpipe.run.progress import LiveProgress, ProgressLines

        if log is None and sys.stdout.isatty() and sys.stderr.isatty():
            live = LiveProgress(stages, session.stats, sys.stderr, _totals(pipeline))
            session.attach(live)
        else:
            heartbeat = ProgressLines(
                stages, session.stats, sys.stderr, _totals(pipeline), interval=progress_interval, log=log
            )
            # Attached before the log: it falls silent at the run's end before the log writes it.
            session.attach(heartbeat)
    if log is not None:
        session.attach(log)
    try:
        for display in (live, heartbeat):
            if display is not None:
                display.start()
        report = None
        try:
            report = session.run()
        finally:
            if heartbeat is not None:
                heartbeat.stop()
            if live is not None:
                live.stop(finished=report is not None and report.status not in ("interrupted", "aborted"))
    except FuncpipeError as exc:
        if log is not None:
            from funcpipe.run.logging import error_event

            click.echo(error_event(exc, session.redact, run_id=session.run_id, pipeline=pipeline.name), err=True)
        else:
            click.echo(f"funcpipe: {session.redact(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    if log_format == "json":
        from funcpipe.run.logging import report_event

        sys.stderr.write(report_event(report) + "\n")
    elif not quiet:
        print_summary(report, sys.stderr)
    else:
        # Quiet means no progress and no table, not silence about what went wrong.
        print_failures(report, sys.stderr)
        if report.message and report.exit_code:
            click.echo(f"funcpipe: {report.message}", err=True)
    sys.exit(report.exit_code)


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("question")
@spec_options
@click.option("--top-k", type=click.IntRange(1, 1000), default=None, help="Chunks to retrieve (default: the spec's).")
@click.option(
    "--mode",
    type=click.Choice(["vector", "keyword", "hybrid"]),
    default=None,
    help="Retrieval: vector, keyword (full-text) or hybrid (both, fused); default: the spec's query.mode.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the answer and its sources as JSON.")
def query(
    spec: Path,
    question: str,
    overrides: tuple[str, ...],
    params_file: Path | None,
    top_k: int | None,
    mode: str | None,
    as_json: bool,
) -> None:
    """Answer QUESTION from what SPEC's pipeline stored, with the spec's own adapters.

    When even the best passage matches the question weakly, it says so
    (on stderr; in the JSON as weak_match) instead of passing noise off as
    an answer.
    """
    pipeline = pipeline_or_exit(spec, overrides, params_file, check_sources=False)
    try:
        ans = pipeline.query(question, top_k=top_k, mode=mode)
    except FuncpipeError as exc:
        click.echo(f"funcpipe: {pipeline.redact(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    if as_json:
        click.echo(json.dumps(ans.to_json(), indent=2, ensure_ascii=False))
        return
    if ans.weak is not None:
        click.echo(
            f"funcpipe: weak match: {ans.weak}; the passages below may not answer the question. "
            "Rephrase it with words the documents use, or check that they cover it.",
            err=True,
        )
    click.echo(ans.text.rstrip())
    click.echo("\nSources:")
    for i, h in enumerate(ans.hits, start=1):
        where = h.meta.get("path") or h.source_id[:12]
        section = h.meta.get("section")
        cited = f"{where} § {section}" if section else where
        click.echo(f"  [{i}] {cited} (score {h.score:.3f})")
