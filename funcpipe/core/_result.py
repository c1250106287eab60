"""`Result` values: `Ok` or `Err`, and the `ErrInfo` that every failure carries.

Inside a stream, failures are values, not exceptions: a stage that cannot
process an item yields ``Err(ErrInfo(...))`` and the stream goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, NoReturn, TypeAlias, TypeVar, final

T = TypeVar("T")
U = TypeVar("U")
E = TypeVar("E")
F = TypeVar("F")
# Results are immutable, so an Ok[int] is an Ok[object]: the parameters are covariant.
T_co = TypeVar("T_co", covariant=True)
E_co = TypeVar("E_co", covariant=True)

_EMPTY: Mapping[str, object] = MappingProxyType({})


class ErrCode:
    """The error taxonomy shared by adapters, policies and the runner (DESIGN.md)."""

    AUTH = "AUTH"
    RATE_LIMIT = "RATE_LIMIT"
    TRANSIENT = "TRANSIENT"
    TIMEOUT = "TIMEOUT"
    NETWORK = "NETWORK"
    SERVICE_SPECIFIC = "SERVICE_SPECIFIC"
    DB_ERROR = "DB_ERROR"
    FATAL_DB = "FATAL_DB"
    CIRCUIT_OPEN = "CIRCUIT_OPEN"
    BAD_INPUT = "BAD_INPUT"
    USER_CODE = "USER_CODE"
    # A plan or stream cancelled from inside: funcpipe's own, never a spec's to name.
    CANCELLED = "CANCELLED"
    # A call a budget refused to start: funcpipe's own, in neither `TAXONOMY` nor `ALL`
    # (no policy may retry it); the runner leaves its items unfinished, for the next run.
    BUDGET_EXHAUSTED = "BUDGET_EXHAUSTED"
    # Given only by `async_with_resilience` once its attempts run out; in neither
    # `TAXONOMY` nor `ALL`, since the runner's retries keep the last code.
    MAX_RETRIES = "MAX_RETRIES"

    TAXONOMY: tuple[str, ...] = (
        AUTH,
        RATE_LIMIT,
        TRANSIENT,
        TIMEOUT,
        NETWORK,
        SERVICE_SPECIFIC,
        DB_ERROR,
        FATAL_DB,
        CIRCUIT_OPEN,
        BAD_INPUT,
        USER_CODE,
    )
    """The codes of DESIGN.md, in its order: those a spec may name (``retry.on``,
    ``circuit_breaker.on``). The policy models and the JSON Schema derive from
    this tuple, so a new code is added here and nowhere else."""
    ALL: frozenset[str] = frozenset({*TAXONOMY, CANCELLED})
    """Every code funcpipe itself gives (`MAX_RETRIES` aside)."""
    RETRYABLE: frozenset[str] = frozenset({RATE_LIMIT, TRANSIENT, TIMEOUT, NETWORK})
    """The codes retried by default."""


@dataclass(frozen=True, slots=True)
class ErrInfo:
    """What went wrong: a taxonomy `code`, a human message and structured `meta`.

    ``meta`` may carry ``attempts``, ``retry_after`` (seconds), ``status``,
    ``traceback`` and, inside streams, the failed ``item`` and ``stage``.
    """

    code: str
    msg: str
    meta: Mapping[str, object] = field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        # A frozen value must not change behind its holder's back: keep a read-only
        # copy, never the caller's dict.
        if type(self.meta) is not MappingProxyType:
            object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))

    def with_meta(self, **extra: object) -> ErrInfo:
        """Return a copy whose meta is extended (or overridden) by ``extra``."""
        return ErrInfo(self.code, self.msg, MappingProxyType({**self.meta, **extra}))

    def __hash__(self) -> int:
        return hash((self.code, self.msg))

    def __reduce__(self) -> tuple[type[ErrInfo], tuple[str, str, dict[str, object]]]:
        # A mappingproxy cannot be pickled or deep-copied; rebuild from a plain dict.
        return (ErrInfo, (self.code, self.msg, dict(self.meta)))


@final
@dataclass(frozen=True, slots=True)
class Ok(Generic[T_co]):
    """A success holding ``value``."""

    value: T_co

    def __init_subclass__(cls) -> None:
        # Stream operators test ``type(r) is Ok`` on every item; a subclass would be
        # mistaken for a failure, so there can be none.
        raise TypeError("Ok cannot be subclassed")

    def __init__(self, value: T_co) -> None:
        # Every stream operator builds one Ok per item: writing the slot directly
        # skips the frozen ``__setattr__`` detour and roughly halves the cost.
        # Assignment after construction still raises ``FrozenInstanceError``.
        _set_ok_value(self, value)

    def map(self, f: Callable[[T_co], U]) -> Ok[U]:
        """Apply ``f`` to the value."""
        return Ok(f(self.value))

    def map_err(self, f: Callable[..., object]) -> Ok[T_co]:
        """Leave a success unchanged."""
        return self

    def and_then(self, f: Callable[[T_co], Result[U, E]]) -> Result[U, E]:
        """Chain a computation that may fail."""
        return f(self.value)

    def unwrap_or(self, default: object) -> T_co:
        """Return the value."""
        return self.value

    def unwrap(self) -> T_co:
        """Return the value."""
        return self.value

    def is_ok(self) -> bool:
        """True."""
        return True


_set_ok_value: Callable[[Ok[Any], object], None] = Ok.__dict__["value"].__set__


@final
@dataclass(frozen=True, slots=True)
class Err(Generic[E_co]):
    """A failure holding ``error`` (normally an `ErrInfo`)."""

    error: E_co

    def map(self, f: Callable[..., object]) -> Err[E_co]:
        """Leave a failure unchanged."""
        return self

    def map_err(self, f: Callable[[E_co], F]) -> Err[F]:
        """Apply ``f`` to the error."""
        return Err(f(self.error))

    def and_then(self, f: Callable[..., object]) -> Err[E_co]:
        """Short-circuit: a failure stays a failure."""
        return self

    def unwrap_or(self, default: U) -> U:
        """Return ``default``."""
        return default

    def unwrap(self) -> NoReturn:
        """Raise `UnwrapError`: there is no value."""
        raise UnwrapError(self.error)

    def is_ok(self) -> bool:
        """False."""
        return False


class UnwrapError(Exception):
    """`Err.unwrap` was called; carries the error."""

    def __init__(self, error: object) -> None:
        super().__init__(f"unwrap() called on Err({error!r})")
        self.error = error


Result: TypeAlias = Ok[T] | Err[E]
