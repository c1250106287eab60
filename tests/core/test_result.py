"""`Result`, `Ok`, `Err` and `ErrInfo`: frozen values with the Result laws."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from funcpipe.core import Err, ErrCode, ErrInfo, Ok, Result, UnwrapError

ints = st.integers(min_value=-1000, max_value=1000)
errinfos = st.builds(ErrInfo, st.sampled_from(sorted(ErrCode.ALL)), st.text(max_size=10))
results: st.SearchStrategy[Result[int, ErrInfo]] = st.one_of(ints.map(Ok), errinfos.map(Err))
pure_int_fns = st.functions(like=lambda x: x, returns=ints, pure=True)
kleisli = st.functions(like=lambda x: Ok(x), returns=results, pure=True)


def test_ok_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Ok(1).value = 2  # type: ignore[misc]


def test_err_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Err(ErrInfo("X", "m")).error = ErrInfo("Y", "n")  # type: ignore[misc]


def test_errinfo_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ErrInfo("X", "m").code = "Y"  # type: ignore[misc]


@given(ints)
def test_ok_is_equal_by_value_and_hashes_alike(x: int) -> None:
    assert Ok(x) == Ok(x)
    assert hash(Ok(x)) == hash(Ok(x))


@given(st.text(max_size=5), st.text(max_size=5), st.dictionaries(st.text(max_size=3), ints, max_size=3))
def test_errinfo_is_equal_by_value_and_hashes_alike(code: str, msg: str, meta: dict[str, int]) -> None:
    assert ErrInfo(code, msg, meta) == ErrInfo(code, msg, dict(meta))
    assert hash(ErrInfo(code, msg, meta)) == hash(ErrInfo(code, msg, dict(meta)))


def test_ok_and_err_of_the_same_payload_differ() -> None:
    ok: object = Ok(1)
    assert ok != Err(1)


def test_ok_matches_by_keyword() -> None:
    match Ok(3):
        case Ok(value=v):
            matched = v
        case Err():
            matched = None
    assert matched == 3


def test_err_matches_by_keyword_down_to_the_code() -> None:
    res: Result[int, ErrInfo] = Err(ErrInfo(ErrCode.TIMEOUT, "slow"))
    match res:
        case Ok():
            code = None
        case Err(error=ErrInfo(code=c)):
            code = c
    assert code == ErrCode.TIMEOUT


def test_ok_matches_positionally() -> None:
    match Ok("v"):
        case Ok(v):
            assert v == "v"
        case _:
            pytest.fail("Ok did not match positionally")


def test_ok_construction_by_keyword_and_replace() -> None:
    assert Ok(value=1) == Ok(1)
    assert dataclasses.replace(Ok(1), value=2) == Ok(2)


@given(results)
def test_map_identity(r: Result[int, ErrInfo]) -> None:
    assert r.map(lambda x: x) == r


@given(results, pure_int_fns, pure_int_fns)
def test_map_composition(r: Result[int, ErrInfo], f: Callable[[int], int], g: Callable[[int], int]) -> None:
    assert r.map(f).map(g) == r.map(lambda x: g(f(x)))


def test_map_on_err_does_not_call_f() -> None:
    def boom(x: object) -> object:
        raise AssertionError("map called f on an Err")

    err = Err(ErrInfo("X", "m"))
    assert err.map(boom) is err


@given(ints, kleisli)
def test_and_then_left_identity(x: int, f: Callable[[int], Result[int, ErrInfo]]) -> None:
    assert Ok(x).and_then(f) == f(x)


@given(results)
def test_and_then_right_identity(r: Result[int, ErrInfo]) -> None:
    assert r.and_then(Ok) == r


@given(results, kleisli, kleisli)
def test_and_then_associativity(
    r: Result[int, ErrInfo],
    f: Callable[[int], Result[int, ErrInfo]],
    g: Callable[[int], Result[int, ErrInfo]],
) -> None:
    assert r.and_then(f).and_then(g) == r.and_then(lambda x: f(x).and_then(g))


@given(results, ints)
def test_unwrap_or_gives_the_value_or_the_default(r: Result[int, ErrInfo], default: int) -> None:
    expected = r.value if isinstance(r, Ok) else default
    assert r.unwrap_or(default) == expected


def test_unwrap_of_err_raises_with_the_error() -> None:
    info = ErrInfo("X", "m")
    with pytest.raises(UnwrapError) as raised:
        Err(info).unwrap()
    assert raised.value.error == info


@given(results)
def test_map_err_changes_only_errors(r: Result[int, ErrInfo]) -> None:
    mapped = r.map_err(lambda e: e.with_meta(seen=True))
    if isinstance(r, Ok):
        assert mapped == r
    else:
        assert mapped == Err(r.error.with_meta(seen=True))


def test_is_ok() -> None:
    assert Ok(1).is_ok()
    assert not Err(ErrInfo("X", "m")).is_ok()


def test_errinfo_meta_defaults_to_empty() -> None:
    assert dict(ErrInfo("X", "m").meta) == {}


def test_errinfo_keeps_its_own_copy_of_meta() -> None:
    meta: dict[str, object] = {"attempts": 1}
    info = ErrInfo("X", "m", meta)
    meta["attempts"] = 9
    assert info.meta["attempts"] == 1


def test_errinfo_meta_is_read_only() -> None:
    with pytest.raises(TypeError):
        ErrInfo("X", "m", {"a": 1}).meta["a"] = 2  # type: ignore[index]


def test_with_meta_extends_a_copy() -> None:
    info = ErrInfo("X", "m", {"a": 1})
    assert dict(info.with_meta(b=2, a=3).meta) == {"a": 3, "b": 2}
    assert dict(info.meta) == {"a": 1}


@given(errinfos, st.dictionaries(st.text(max_size=3), ints, max_size=3))
def test_errinfo_survives_pickling(info: ErrInfo, meta: dict[str, int]) -> None:
    info = info.with_meta(**meta)
    assert pickle.loads(pickle.dumps(info)) == info


def test_retryable_codes_are_codes() -> None:
    assert ErrCode.RETRYABLE <= ErrCode.ALL


def test_ok_cannot_be_subclassed() -> None:
    with pytest.raises(TypeError, match="cannot be subclassed"):

        class Special(Ok[int]):  # type: ignore[misc]
            pass
