"""The shipped price table (``prices.json``): list prices of known models, by adapter kind.

It is data, read once when this module is imported, so that compiling a
spec stays free of I/O. A spec overrides it per adapter with ``price:
{input, output, request}``; a model the table does not know, with no
``price:``, is unpriced: its usage is counted and its cost is unknown.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

from funcpipe.policy.models import Price

TABLE = "prices.json"
"""The table's file name, inside this package."""


def _read() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(resources.files(__package__).joinpath(TABLE).read_text(encoding="utf-8"))
    return data


_RAW = _read()

PRICES: Mapping[str, Mapping[str, Price]] = {
    kind: {model: Price(**entry) for model, entry in models.items()} for kind, models in _RAW["models"].items()
}
"""The table: adapter kind -> model (or ``*`` for every model of the kind) -> `Price`."""

AS_OF: str = str(_RAW["as_of"])
"""The date the table's prices were read from the providers' price lists."""


def known_price(kind: str, model: str | None) -> Price | None:
    """The listed price of ``model`` of adapter ``kind`` (an Ollama ``:tag`` aside), or None if unlisted."""
    models = PRICES.get(kind)
    if models is None:
        return None
    if model is not None:
        name = model if model in models else model.split(":", 1)[0]
        if name in models:
            return models[name]
    return models.get("*")


__all__ = ["AS_OF", "PRICES", "TABLE", "known_price"]
