"""Config models of the built-in stages (the fields under a stage's ``with:``)."""

from __future__ import annotations

import codecs
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from funcpipe.policy.models import Int

MAX_GLOBS = 100
"""Globs (and exclude globs) per source at most."""


def _path_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("a path cannot contain a NUL character")
    return value


def _relative_glob(value: str) -> str:
    # A glob is matched under `path`: an absolute one or one with `..` would
    # read files outside it (and pathlib refuses both when the run starts).
    if not value.strip():
        raise ValueError("a glob cannot be empty: write **/* for every file, or *.md for some")
    if "\x00" in value:
        raise ValueError("a glob cannot contain a NUL character")
    if value.startswith(("/", "\\")) or (len(value) > 1 and value[1] == ":"):
        raise ValueError(f"{value!r} is absolute: a glob is relative to `path`, e.g. **/*.md")
    if ".." in value.replace("\\", "/").split("/"):
        raise ValueError(f"{value!r} has a '..' segment: a glob matches files under `path` only")
    return value


PathText = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_path_text)]
"""A file or directory path as written in a spec: not empty, no NUL."""

Glob = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_relative_glob)]
"""A glob relative to a source's `path`: not empty, not absolute, no ``..`` segment."""

FieldName = Annotated[str, Field(min_length=1, max_length=256)]
"""The name of a field in a JSON object."""


def _one_or_many(value: object) -> str:
    # One form by the value's type, so a bad glob reports its own error once.
    return "one" if isinstance(value, str) else "many"


def _known_encoding(value: str) -> str:
    try:
        codecs.lookup(value)
    except LookupError:
        raise ValueError(f"unknown text encoding {value!r}: use e.g. utf-8, latin-1 or cp1252") from None
    return value


class StageConfig(BaseModel):
    """Base of every stage's ``with:`` block: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resume_ignores: ClassVar[frozenset[str]] = frozenset()
    """Fields that do not shape the stage's output: editing them redoes nothing on resume."""


class FilesSourceConfig(StageConfig):
    """Read files under a directory as items (one file, one item)."""

    path: PathText = Field(..., description="Directory (or single file), relative to the spec file.")
    glob: Annotated[
        Annotated[Glob, Tag("one")]
        | Annotated[tuple[Glob, ...], Field(min_length=1, max_length=MAX_GLOBS), Tag("many")],
        Discriminator(_one_or_many),
    ] = Field("**/*", description="Glob (or list of globs) of files to read under `path`.")
    exclude: tuple[Glob, ...] = Field((), max_length=MAX_GLOBS, description="Globs to leave out.")
    mode: Literal["text", "bytes"] = Field("text", description="Read as text (decoded) or raw bytes.")
    encoding: Annotated[str, AfterValidator(_known_encoding)] = Field(
        "utf-8", max_length=64, description="Text encoding; undecodable files become BAD_INPUT items."
    )
    max_bytes: Int = Field(10_000_000, ge=1, le=1_000_000_000, description="Larger files become BAD_INPUT items.")
    allow_empty: bool = Field(
        False,
        description="Let a missing `path`, or globs that match no file, read nothing instead of being an error.",
    )


class JsonlSourceConfig(StageConfig):
    """Read a JSON Lines file: one object per line, one item per object."""

    path: PathText = Field(..., description="File path, relative to the spec file.")
    id_field: FieldName | None = Field(None, description="Field holding a stable id; default: hash of the object.")
    text_field: FieldName | None = Field(
        None, description="If set, the item's data is this field's text; else the object."
    )
    max_line_bytes: Int = Field(10_000_000, ge=1, le=1_000_000_000, description="Longer lines become BAD_INPUT items.")
    allow_empty: bool = Field(False, description="Let a missing or empty file read nothing instead of being an error.")


class CleanConfig(StageConfig):
    """Normalise text: Unicode NFC, control characters, whitespace."""

    normalize: Literal["NFC", "NFKC", "none"] = Field("NFC", description="Unicode normal form.")
    strip_control: bool = Field(True, description="Remove control characters (tabs and newlines are kept).")
    collapse_whitespace: bool = Field(True, description="Collapse runs of spaces; at most one blank line.")


class ChunkConfig(StageConfig):
    """Split text into overlapping chunks at paragraph, then sentence, then word boundaries."""

    size: Int = Field(800, ge=16, le=1_000_000, description="Chunk size in characters at most.")
    overlap: Int = Field(100, ge=0, description="Characters shared by consecutive chunks.")
    min_size: Int = Field(1, ge=1, description="Chunks shorter than this (after stripping) are dropped.")

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkConfig:
        if self.overlap >= self.size:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than size ({self.size})")
        if self.min_size > self.size:
            raise ValueError(
                f"min_size ({self.min_size}) is larger than size ({self.size}): every chunk would be dropped"
            )
        return self


class EmbedConfig(StageConfig):
    """Embed each item's text with the stage's embedding adapter."""

    purpose: Literal["document", "query"] = Field("document", description="What the texts are for.")


class UpsertConfig(StageConfig):
    """Write embedded chunks to the stage's vector store, idempotently."""

    resume_ignores: ClassVar[frozenset[str]] = frozenset({"sync", "delete_stale"})

    sync: Literal["mirror", "append"] = Field(
        "mirror",
        description="mirror: after a run that listed its sources completely, delete the rows of sources that "
        "are gone; append: never delete rows.",
    )
    delete_stale: bool | None = Field(
        None,
        description="Remove a changed source's old chunks once all its new ones are written "
        "(default: true with sync: mirror, false with sync: append).",
    )

    @property
    def deletes_stale(self) -> bool:
        """Whether stale chunks of a changed source are removed."""
        return self.sync == "mirror" if self.delete_stale is None else self.delete_stale


class VectorQueryConfig(StageConfig):
    """Embed each item's text as a query and emit its nearest chunks."""

    top_k: Int = Field(5, ge=1, le=1000, description="Hits per query.")
    mode: Literal["vector", "keyword", "hybrid"] = Field(
        "vector", description="Retrieval: vector, keyword (full-text BM25) or hybrid (both, fused by RRF)."
    )
    embedder: Annotated[str, Field(min_length=1)] | None = Field(
        None, description="Embedding adapter for the question (default: the pipeline's)."
    )
    filter: dict[str, object] | None = Field(None, description="Metadata equality filter.")


class CallableConfig(StageConfig):
    """A user callable named by import path, ``package.module:function``."""

    fn: str = Field(
        ...,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$",
        max_length=512,
        description="Import path module:attr.",
    )
    kwargs: dict[str, object] = Field(default_factory=dict, description="Extra keyword arguments.")


class JsonlSinkConfig(StageConfig):
    """Append items to a JSON Lines file (idempotent across resumed runs)."""

    path: PathText = Field(..., description="Output file, relative to the spec file.")


class StdoutSinkConfig(StageConfig):
    """Print items to standard output."""

    format: Literal["json", "text"] = Field("json", description="One JSON object per line, or the text only.")
