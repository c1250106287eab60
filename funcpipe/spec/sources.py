"""Checking that source stages have something to read, located in the spec.

`funcpipe.stages.files.check_source_path` decides what "nothing to read" is;
this module reports it at the stage's ``with.path``. `funcpipe validate`
checks the paths written literally in the spec (no ``${...}`` or
``{{ ... }}``: they are the same in every environment); the runner checks
every source path at run start, before anything is read or written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path as FsPath

from funcpipe.errors import SpecError, SpecErrors
from funcpipe.spec._format import format_errors
from funcpipe.spec._paths import Path, format_path
from funcpipe.spec._yaml import Document, parse_yaml
from funcpipe.stages.config import FilesSourceConfig, JsonlSourceConfig
from funcpipe.stages.files import check_source_path


class SourcePathErrors(SpecErrors):
    """Located source-path errors found at run start; their text carries the hints too."""

    def render(self) -> str:
        """Every error with its hint, as `funcpipe validate` prints them."""
        return format_errors(getattr(self, "errors", []))


def source_path_errors(
    doc: Document, stage_configs: Mapping[str, object], base_dir: FsPath, *, literal_only: bool = True
) -> list[SpecError]:
    """A located error for each source stage whose ``with.path`` would read nothing.

    Args:
        doc: the document (its data and the places of its values).
        stage_configs: each stage's validated ``with:`` config, by stage id.
        base_dir: the directory relative paths are resolved against.
        literal_only: leave out paths interpolated or rendered from templates.
    """
    stages = doc.data.get("stages") if isinstance(doc.data, dict) else None
    errors: list[SpecError] = []
    for i, stage in enumerate(stages if isinstance(stages, list) else []):
        sid = stage.get("id") if isinstance(stage, dict) else None
        config = stage_configs.get(sid) if isinstance(sid, str) else None
        if not isinstance(config, FilesSourceConfig | JsonlSourceConfig):
            continue
        where: Path = ("stages", i, "with", "path")
        if literal_only and where in doc.written:
            continue
        problem = check_source_path(config, base_dir)
        if problem is not None:
            errors.append(doc.error(where, problem.message, hint=problem.hint))
    return errors


def check_sources(text: str, file: str, base_dir: FsPath, stages: Iterable[tuple[int, object]]) -> None:
    """Fail if any source stage would read nothing, located at its ``with.path``.

    Args:
        text: the spec's text (parsed again for the places of its values; may be empty).
        file: the spec file's name, for the errors.
        base_dir: the directory relative paths are resolved against.
        stages: ``(index in the document's stages, validated with: config)`` of each stage.

    Raises:
        SourcePathErrors: one located error per such stage.
    """
    doc = _document(text, file)
    errors: list[SpecError] = []
    for i, config in stages:
        if not isinstance(config, FilesSourceConfig | JsonlSourceConfig):
            continue
        problem = check_source_path(config, base_dir)
        if problem is None:
            continue
        where: Path = ("stages", i, "with", "path")
        if doc is not None:
            errors.append(doc.error(where, problem.message, hint=problem.hint))
        else:
            errors.append(SpecError(problem.message, file=file, path=format_path(where), hint=problem.hint))
    if errors:
        raise SourcePathErrors(errors)


def _document(text: str, file: str) -> Document | None:
    # A compiled pipeline keeps the spec's text, not its places: parse it again for them.
    if not text:
        return None
    try:
        return parse_yaml(text, file)
    except SpecErrors:
        return None
