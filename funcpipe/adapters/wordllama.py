"""The ``wordllama`` embedder: a local semantic model, in process, from weights shipped in a wheel.

WordLlama (MIT, on PyPI) packs a static table of token vectors distilled
from a large language model's embedding layer: ``l2_supercat_256`` (32,000
tokens x 256 dimensions, 16 MB) and its tokenizer ship inside the wheel. A
text's vector is the mean of its tokens' vectors, L2-normalised, so the dot
product of two vectors is their cosine similarity. Its first 128 or 64
dimensions are usable on their own (the model was trained Matryoshka-style).

The files are read from the installed package directly, without importing
it: WordLlama's own loader looks for the tokenizer in a folder that does not
exist and then downloads it from the Hugging Face hub, and importing the
package configures the root logger. Nothing here opens a socket.

Embedding runs on a worker thread, so the event loop keeps serving timers,
progress and I/O while a batch is embedded. A text's vector depends on the
text and the config only, never on ``purpose`` or on the rest of its batch.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from funcpipe.adapters.config import WordLlamaConfig
from funcpipe.adapters.resources import Resources
from funcpipe.core import AsyncPlan, Err, ErrCode, ErrInfo, Ok, Result
from funcpipe.errors import RunError
from funcpipe.ports import Embedding, Fingerprint, Purpose

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
    from tokenizers import Tokenizer

INSTALL_HINT = "pip install 'funcpipe-runner' (it depends on wordllama), or pip install wordllama"

_WEIGHTS = {"l2_supercat": ("weights/l2_supercat_256.safetensors", "tokenizers/l2_supercat_tokenizer_config.json")}
_TENSOR = "embedding.weight"
# Tokens of one batch held at once as vectors: bounds the memory of a batch
# of long texts (tokens x dimension x 4 bytes) to a few MB.
_TOKENS_PER_STEP = 16_384


def package_files(model: str) -> tuple[Path, Path]:
    """The weights and tokenizer files of ``model`` inside the installed ``wordllama`` package.

    Raises:
        RunError: if the package is not installed, or lacks the files, naming what to install.
    """
    spec = importlib.util.find_spec("wordllama")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise RunError(f"the wordllama embedder needs the wordllama package, which is not installed: {INSTALL_HINT}")
    weights_name, tokenizer_name = _WEIGHTS[model]
    root = Path(locations[0])
    weights, tokenizer = root / weights_name, root / tokenizer_name
    for path in (weights, tokenizer):
        if not path.is_file():
            raise RunError(
                f"the installed wordllama package has no {path.name} (model {model}): reinstall it with "
                "pip install --force-reinstall 'wordllama>=0.4,<0.5'"
            )
    return weights, tokenizer


class _Model:
    """The token vectors and the tokenizer, loaded once per process and model."""

    def __init__(self, table: NDArray[np.float32], tokenizer: Tokenizer) -> None:
        self.table = table
        self.tokenizer = tokenizer

    @classmethod
    def load(cls, model: str) -> _Model:
        weights, tokenizer_file = package_files(model)
        try:
            import numpy as np
            from safetensors import safe_open
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise RunError(f"the wordllama embedder needs {exc.name}, which is not installed: {INSTALL_HINT}") from None
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        with safe_open(str(weights), framework="np", device="cpu") as f:
            table = np.ascontiguousarray(f.get_tensor(_TENSOR), dtype=np.float32)
        return cls(table, tokenizer)


_models: dict[str, _Model] = {}
_models_lock = threading.Lock()


def _model(name: str) -> _Model:
    with _models_lock:
        if name not in _models:
            _models[name] = _Model.load(name)
        return _models[name]


def embed_texts(model: _Model, texts: Sequence[str], dim: int) -> list[list[float]]:
    """The unit vectors of ``texts``: each the mean of its tokens' first ``dim`` dimensions.

    A text with no tokens (empty, or only whitespace) gets the zero vector,
    which stores rank as unrelated to everything.
    """
    import numpy as np

    table = model.table
    # encode_batch_fast skips computing character offsets, which are not needed here (a quarter of the time).
    encode = getattr(model.tokenizer, "encode_batch_fast", model.tokenizer.encode_batch)
    encodings = encode(list(texts), add_special_tokens=False)
    out: list[list[float]] = []
    i = 0
    while i < len(encodings):
        # A step of texts whose tokens fit the budget (at least one text).
        j, tokens = i, 0
        while j < len(encodings) and (j == i or tokens + len(encodings[j].ids) <= _TOKENS_PER_STEP):
            tokens += len(encodings[j].ids)
            j += 1
        ids = np.fromiter((t for e in encodings[i:j] for t in e.ids), dtype=np.int64, count=tokens)
        np.clip(ids, 0, table.shape[0] - 1, out=ids)
        lengths = np.array([len(e.ids) for e in encodings[i:j]], dtype=np.int64)
        vectors = np.zeros((j - i, dim), dtype=np.float32)
        present = lengths > 0
        if tokens:
            starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))[present]
            # reduceat sums each text's tokens in order, alone: a vector never
            # depends on which other texts share its batch.
            vectors[present] = np.add.reduceat(table[ids, :dim], starts, axis=0)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        np.divide(vectors, norms, out=vectors, where=norms > 0)
        out.extend(vectors.tolist())
        i = j
    return out


class WordLlamaEmbedder:
    """An `EmbedPort` running WordLlama in process, on a worker thread.

    Args:
        config: model, dimension and batch size.
    """

    def __init__(self, config: WordLlamaConfig) -> None:
        self._config = config
        # Checked now, so a missing package fails the run before any source is read.
        package_files(config.model)
        self._fingerprint = Fingerprint("wordllama", f"{config.model}-mean-l2", config.dim)

    @property
    def fingerprint(self) -> Fingerprint:
        """``wordllama:l2_supercat-mean-l2:<dim>``."""
        return self._fingerprint

    @property
    def max_batch(self) -> int:
        """``max_batch`` from the config."""
        return self._config.max_batch

    def embed_batch(
        self, texts: Sequence[str], purpose: Purpose = "document"
    ) -> AsyncPlan[list[Result[Embedding, ErrInfo]]]:
        """Embed ``texts`` on a worker thread; ``purpose`` is ignored (the model is symmetric)."""
        batch = list(texts)
        config = self._config

        def work() -> list[list[float]]:
            return embed_texts(_model(config.model), batch, config.dim)

        async def run() -> Result[list[Result[Embedding, ErrInfo]], ErrInfo]:
            if not batch:
                return Ok([])
            try:
                vectors = await asyncio.to_thread(work)
            except RunError as exc:
                return Err(ErrInfo(ErrCode.SERVICE_SPECIFIC, str(exc)))
            except Exception as exc:  # a corrupt weights file, say: the message is the tokenizer's or numpy's
                return Err(ErrInfo(ErrCode.SERVICE_SPECIFIC, f"wordllama failed: {type(exc).__name__}: {exc}"))
            return Ok([Ok(v) for v in vectors])

        return run


def create(config: WordLlamaConfig, resources: Resources) -> WordLlamaEmbedder:
    """The adapter factory: a `WordLlamaEmbedder` (it needs no resources; the model loads on first use)."""
    return WordLlamaEmbedder(config)
