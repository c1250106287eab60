"""What the store tests share about processes: the PostgreSQL processes of a data directory, owner records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psutil

from funcpipe.run.resources import owner_lock


def postgres_processes(pgdata: Path) -> list[psutil.Process]:
    """The postmaster whose data directory is ``pgdata`` and its children, if any run."""
    target = str(pgdata.resolve())
    found: list[psutil.Process] = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            if proc.info["name"] != "postgres":
                continue
            cmdline = proc.info["cmdline"] or []
            parent = proc.parent()
            parent_cmdline = parent.cmdline() if parent is not None and parent.name() == "postgres" else []
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if target in cmdline or target in parent_cmdline:
            found.append(proc)
    return found


def owner_records(pgdata: Path) -> tuple[Any, Any]:
    """The package's owner pids and funcpipe's owner start times, as the files hold them."""

    def read(path: Path, empty: Any) -> Any:
        return json.loads(path.read_text()) if path.exists() else empty

    return read(pgdata / ".handle_pids.json", []), read(pgdata.parent / f"{pgdata.name}.owners.json", {})


def assert_no_server_left(pgdata: Path) -> None:
    """No PostgreSQL process of ``pgdata`` runs, and no owner is recorded (checked under the owners' lock)."""
    with owner_lock(pgdata.resolve()):
        left = postgres_processes(pgdata)
        records = owner_records(pgdata)
    assert not left, f"PostgreSQL processes of {pgdata} outlived their runs: {[p.pid for p in left]}"
    assert records == ([], {}), f"stale owner records: {records}"
