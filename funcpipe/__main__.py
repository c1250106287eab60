"""``python -m funcpipe``."""

from __future__ import annotations

from funcpipe.cli import main

main()
