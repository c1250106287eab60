"""Loading a test file: the spec's safe, position-keeping loader, then validation with located errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from funcpipe.errors import SpecError, SpecErrors
from funcpipe.pipetest.models import TestFile
from funcpipe.spec.documents import Document, parse_yaml, pydantic_errors

MAX_TEST_FILE = 2_000_000
"""Characters in a test file at most (inline inputs make them larger than specs)."""

SUFFIXES = (".test.yaml", ".test.yml")
"""What a test file's name ends with."""


@dataclass(frozen=True)
class LoadedTestFile:
    """A validated test file.

    Attributes:
        path: the file.
        doc: the loaded document, with the place of every value.
        model: the validated model.
    """

    path: Path
    doc: Document
    model: TestFile

    @property
    def spec_path(self) -> Path:
        """The spec it tests."""
        return self.path.parent / self.model.spec

    def error(
        self, where: tuple[str | int, ...], message: str, *, hint: str | None = None, at_key: bool = False
    ) -> SpecError:
        """A `SpecError` located at ``where`` in the test file."""
        return self.doc.error(where, message, hint=hint, at_key=at_key)


def load_test_file(path: Path) -> LoadedTestFile:
    """Load and validate the test file at ``path``.

    Raises:
        SpecErrors: every error found, each located (file, line, column, path, hint).
    """
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecErrors([SpecError("no such test file", file=name, hint="check the path")]) from None
    except UnicodeDecodeError as exc:
        raise SpecErrors([SpecError(f"not UTF-8 text (byte {exc.start})", file=name)]) from None
    except OSError as exc:
        raise SpecErrors([SpecError(f"cannot read the test file: {exc.strerror}", file=name)]) from None
    if len(text) > MAX_TEST_FILE:
        raise SpecErrors(
            [
                SpecError(
                    f"the test file is too large ({len(text)} characters; at most {MAX_TEST_FILE})",
                    file=name,
                    hint="put large inputs in fixture files (inputs: {<source>: {path: ...}})",
                )
            ]
        )
    doc = parse_yaml(text, name, allow_empty=True)
    if doc.data is None:
        raise SpecErrors(
            [
                SpecError(
                    "the test file is empty",
                    file=name,
                    hint="a test file starts with `spec: <the spec file>` and a list of `tests:`",
                )
            ]
        )
    if not isinstance(doc.data, dict):
        raise SpecErrors(
            [doc.error((), "a test file is a mapping with `spec:` and `tests:`", hint="see docs/testing.md")]
        )
    try:
        model = TestFile.model_validate(doc.data)
    except ValidationError as exc:
        raise SpecErrors(pydantic_errors(doc, exc, model=TestFile)) from None
    loaded = LoadedTestFile(path, doc, model)
    if not loaded.spec_path.is_file():
        raise SpecErrors(
            [
                loaded.error(
                    ("spec",),
                    f"no spec file {model.spec!r} next to the test file",
                    hint="`spec:` is relative to the test file",
                )
            ]
        )
    return loaded


__all__ = ["MAX_TEST_FILE", "SUFFIXES", "LoadedTestFile", "load_test_file"]
