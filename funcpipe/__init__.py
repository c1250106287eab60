"""funcpipe: declarative async pipelines for flaky external services."""

from __future__ import annotations

__version__ = "0.1.0"
