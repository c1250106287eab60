"""Rendering located spec errors for people (text), tools (json) and GitHub Actions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Literal

from funcpipe.errors import SpecError, SpecErrors

ErrorFormat = Literal["text", "json", "github"]


def _github_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _github_property(text: str) -> str:
    return _github_data(text).replace(":", "%3A").replace(",", "%2C")


def format_error(error: SpecError, fmt: ErrorFormat = "text") -> str:
    """One error in the given format (``json`` gives one JSON object)."""
    if fmt == "json":
        return json.dumps(error.to_json(), ensure_ascii=False)
    if fmt == "github":
        where = f"{error.path}: " if error.path else ""
        body = f"{where}{error.message}" + (f"\nhint: {error.hint}" if error.hint else "")
        props = ",".join(
            (
                f"file={_github_property(error.file)}",
                f"line={error.line}",
                f"col={error.col}",
                "title=funcpipe validate",
            )
        )
        return f"::error {props}::{_github_data(body)}"
    text = error.render()
    return f"{text}\n    hint: {error.hint}" if error.hint else text


def format_errors(errors: Sequence[SpecError], fmt: ErrorFormat = "text") -> str:
    """Every error in the given format.

    ``text`` gives ``file:line:col: path: message`` with the hint indented on
    the next line; ``github`` gives one workflow command per error; ``json``
    gives a JSON array of ``{file, line, col, path, message, hint}`` objects.
    """
    flat = [e for err in errors for e in (err.errors if isinstance(err, SpecErrors) else [err])]
    if fmt == "json":
        return json.dumps([e.to_json() for e in flat], ensure_ascii=False, indent=2)
    return "\n".join(format_error(e, fmt) for e in flat)
