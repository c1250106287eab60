"""A kind module whose dependency is not installed."""

from __future__ import annotations

import funcpipe_faulty_missing_dependency  # noqa: F401

KIND = None
