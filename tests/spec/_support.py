"""Helpers shared by the spec tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from funcpipe.errors import SpecError, SpecErrors
from funcpipe.spec import LoadedSpec, load_spec_text

HERE = Path(__file__).parent
VALID = sorted((HERE / "valid").glob("*.yaml"))
INVALID = sorted((HERE / "invalid").glob("*.yaml"))

MINIMAL = """\
version: 1
name: t
stages:
  - {id: load, use: source.files, with: {path: docs}}
"""


def load(
    text: str,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Sequence[str] = (),
    base_dir: Path | None = None,
) -> LoadedSpec:
    """Load ``text`` with an explicit (default empty) environment."""
    return load_spec_text(
        text,
        filename="spec.yaml",
        env={} if env is None else env,
        overrides=overrides,
        base_dir=base_dir,
    )


def errors_of(text: str, **kwargs: object) -> list[SpecError]:
    """The errors loading ``text`` raises (fails the test if it loads)."""
    with pytest.raises(SpecErrors) as info:
        load(text, **kwargs)  # type: ignore[arg-type]
    return info.value.errors


def only_error(text: str, **kwargs: object) -> SpecError:
    """The single error loading ``text`` raises."""
    errors = errors_of(text, **kwargs)
    assert len(errors) == 1, [e.render() for e in errors]
    return errors[0]
