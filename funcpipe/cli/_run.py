"""``funcpipe run`` and ``funcpipe query``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from funcpipe.cli._validate import pipeline_or_exit, spec_options
from funcpipe.errors import FuncpipeError


def _silent(message: str) -> None:
    """``--quiet``: status lines are not shown (failures and errors still are)."""


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
    executor: str | None,
    address: str | None,
    workers: int | None,
) -> None:
    """Run the pipeline in SPEC.

    Exit codes: 0 every item done; 1 some items failed (see the dead-letter
    file) or the run failed; 2 the spec is invalid; 130 or 143 stopped by
    SIGINT or SIGTERM.
    """
    pipeline = pipeline_or_exit(spec, overrides, params_file)
    if dry_run:
        plan = pipeline.estimate(latency=latency)
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
            executor="ray" if executor == "ray" else "local" if executor == "local" else None,
            address=address,
            workers=workers,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    progress = None
    if log_format == "json":
        from funcpipe.run.logging import JsonEventLog

        session.attach(JsonEventLog(sys.stderr, redact=session.redact))
    elif not quiet and sys.stdout.isatty() and sys.stderr.isatty():
        from funcpipe.run.progress import LiveProgress

        progress = LiveProgress([(s.id, s.use) for s in session.stages], session.stats, sys.stderr)
        session.attach(progress)
    try:
        if progress is not None:
            progress.start()
        try:
            report = session.run()
        finally:
            if progress is not None:
                progress.stop()
    except FuncpipeError as exc:
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
@click.option("--json", "as_json", is_flag=True, help="Print the answer and its sources as JSON.")
def query(
    spec: Path, question: str, overrides: tuple[str, ...], params_file: Path | None, top_k: int | None, as_json: bool
) -> None:
    """Answer QUESTION from what SPEC's pipeline stored, with the spec's own adapters."""
    pipeline = pipeline_or_exit(spec, overrides, params_file, check_sources=False)
    try:
        ans = pipeline.query(question, top_k=top_k)
    except FuncpipeError as exc:
        click.echo(f"funcpipe: {pipeline.redact(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    if as_json:
        click.echo(json.dumps(ans.to_json(), indent=2, ensure_ascii=False))
        return
    click.echo(ans.text.rstrip())
    click.echo("\nSources:")
    for i, h in enumerate(ans.hits, start=1):
        where = h.meta.get("path") or h.source_id[:12]
        click.echo(f"  [{i}] {where} (score {h.score:.3f})")
