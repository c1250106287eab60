"""Config models of the built-in stages (the fields under a stage's ``with:``)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StageConfig(BaseModel):
    """Base of every stage's ``with:`` block: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resume_ignores: ClassVar[frozenset[str]] = frozenset()
    """Fields that do not shape the stage's output: editing them redoes nothing on resume."""


class FilesSourceConfig(StageConfig):
    """Read files under a directory as items (one file, one item)."""

    path: str = Field(..., description="Directory (or single file), relative to the spec file.")
    glob: str | tuple[str, ...] = Field("**/*", description="Glob (or list of globs) of files to read under `path`.")
    exclude: tuple[str, ...] = Field((), description="Globs to leave out.")
    mode: Literal["text", "bytes"] = Field("text", description="Read as text (decoded) or raw bytes.")
    encoding: str = Field("utf-8", description="Text encoding; undecodable files become BAD_INPUT items.")
    max_bytes: int = Field(10_000_000, ge=1, description="Larger files become BAD_INPUT items.")


class JsonlSourceConfig(StageConfig):
    """Read a JSON Lines file: one object per line, one item per object."""

    path: str = Field(..., description="File path, relative to the spec file.")
    id_field: str | None = Field(None, description="Field holding a stable id; default: hash of the object.")
    text_field: str | None = Field(None, description="If set, the item's data is this field's text; else the object.")


class CleanConfig(StageConfig):
    """Normalise text: Unicode NFC, control characters, whitespace."""

    normalize: Literal["NFC", "NFKC", "none"] = Field("NFC", description="Unicode normal form.")
    strip_control: bool = Field(True, description="Remove control characters (tabs and newlines are kept).")
    collapse_whitespace: bool = Field(True, description="Collapse runs of spaces; at most one blank line.")


class ChunkConfig(StageConfig):
    """Split text into overlapping chunks at paragraph, then sentence, then word boundaries."""

    size: int = Field(800, ge=16, description="Chunk size in characters at most.")
    overlap: int = Field(100, ge=0, description="Characters shared by consecutive chunks.")
    min_size: int = Field(1, ge=1, description="Chunks shorter than this (after stripping) are dropped.")

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkConfig:
        if self.overlap >= self.size:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than size ({self.size})")
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

    top_k: int = Field(5, ge=1, le=1000, description="Hits per query.")
    embedder: str | None = Field(None, description="Embedding adapter for the question (default: the pipeline's).")
    filter: dict[str, object] | None = Field(None, description="Metadata equality filter.")


class CallableConfig(StageConfig):
    """A user callable named by import path, ``package.module:function``."""

    fn: str = Field(..., pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$", description="Import path module:attr.")
    kwargs: dict[str, object] = Field(default_factory=dict, description="Extra keyword arguments.")


class JsonlSinkConfig(StageConfig):
    """Append items to a JSON Lines file (idempotent across resumed runs)."""

    path: str = Field(..., description="Output file, relative to the spec file.")


class StdoutSinkConfig(StageConfig):
    """Print items to standard output."""

    format: Literal["json", "text"] = Field("json", description="One JSON object per line, or the text only.")
