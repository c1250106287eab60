"""A plugin module whose import fails, as a plugin's does when a dependency is missing."""

from __future__ import annotations

raise ImportError("No module named 'acme_native_extension'")
