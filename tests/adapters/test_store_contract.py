"""The `VectorStorePort` contract, run against every store: memory, pgvector, qdrant, chroma and lancedb.

Each store is real: pgvector on the session's embedded PostgreSQL (with
``exact: true``, so its answers are exact), Qdrant in local mode, Chroma's
persistent client and a local Chroma server (``chroma run``), and LanceDB
on a directory. Each test gets a fresh table or collection; the embedded
stores share one state directory per module. That faults are classified,
each a real one, is in test_store_faults.py.

Tests beyond the contract live beside each store's own tests
(tests/adapters/test_pgvector.py, test_stores.py for memory and pgvector's
jsonb containment).
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funcpipe.adapters.chroma import ChromaStore
from funcpipe.adapters.config import ChromaConfig, LanceDBConfig, PgvectorConfig, QdrantConfig
from funcpipe.adapters.lancedb import LanceDBStore
from funcpipe.adapters.memory import MemoryStore
from funcpipe.adapters.pgvector import PgvectorStore
from funcpipe.adapters.qdrant import QdrantStore
from funcpipe.core import Err, ErrCode, Ok
from funcpipe.ports import Fingerprint, RetrievalMode, VectorStorePort
from funcpipe.run.resources import RunResources
from tests.adapters._stores import FP, StoreFactory, hits, ok, ready, rec, tie_groups
from tests.pg import resources_for, unique_name

OTHER_FP = Fingerprint("openai", "text-embedding-3-small", 3)

KINDS = ("memory", "pgvector", "qdrant", "chroma", "chroma-server", "lancedb")
"""Every store; ``chroma-server`` is the chroma store talking to a real local Chroma server."""
EMBEDDED = ("qdrant", "chroma", "lancedb")

MODES: dict[str, frozenset[RetrievalMode]] = {
    "memory": frozenset({"vector", "keyword", "hybrid"}),
    "pgvector": frozenset({"vector", "keyword", "hybrid"}),
    "qdrant": frozenset({"vector"}),
    "chroma": frozenset({"vector"}),
    "chroma-server": frozenset({"vector"}),
    "lancedb": frozenset({"vector", "keyword", "hybrid"}),
}
"""The retrieval modes each store ranks by; the others fail as SERVICE_SPECIFIC (docs/providers.md)."""


class ChromaServer:
    """A real Chroma server (``chroma run``) on 127.0.0.1 at an ephemeral port, its data in ``path``."""

    def __init__(self, path: Path) -> None:
        code = "import sys, chromadb_rust_bindings; chromadb_rust_bindings.cli(sys.argv[1:])"
        args = ["chroma", "run", "--path", str(path), "--host", "127.0.0.1", "--port", "0"]
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.url = f"http://127.0.0.1:{listening_port(self.process.pid)}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def listening_port(pid: int, timeout: float = 60.0) -> int:
    """The TCP port process ``pid`` listens on (it was told port 0 and does not say which it got)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        inodes = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        for line in Path("/proc/net/tcp").read_text(encoding="ascii").splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                return int(fields[1].rsplit(":", 1)[1], 16)
        time.sleep(0.1)
    raise TimeoutError(f"process {pid} did not listen within {timeout}s")


class Stores:
    """Makes stores of every kind: one state directory per kind; the Chroma server started on first use."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self._factory = factory
        self._dirs: dict[str, Path] = {}
        self._chroma: ChromaServer | None = None

    def resources(self, kind: str) -> RunResources:
        """Resources for a store of ``kind``: pgvector's reach the session's embedded server."""
        if kind not in self._dirs:
            self._dirs[kind] = self._factory.mktemp(kind)
        return resources_for(self._dirs[kind]) if kind == "pgvector" else RunResources(self._dirs[kind])

    def make(self, kind: str, resources: RunResources, name: str | None = None) -> VectorStorePort:
        """A store of ``kind`` on ``resources``: the table or collection ``name``, by default a fresh one."""
        name = name or unique_name()
        if kind == "memory":
            return MemoryStore()
        if kind == "pgvector":
            return PgvectorStore(PgvectorConfig(table=name, exact=True), resources)
        if kind == "qdrant":
            return QdrantStore(QdrantConfig(collection=name), resources)
        if kind == "chroma":
            return ChromaStore(ChromaConfig(collection=name), resources)
        if kind == "chroma-server":
            if self._chroma is None:
                self._chroma = ChromaServer(self._factory.mktemp("chroma-server"))
            return ChromaStore(ChromaConfig(collection=name, url=self._chroma.url), resources)
        return LanceDBStore(LanceDBConfig(table=name), resources)

    def close(self) -> None:
        if self._chroma is not None:
            self._chroma.stop()


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    """The module's store maker; the Chroma server stops when the module is done."""
    maker = Stores(tmp_path_factory)
    yield maker
    maker.close()


@pytest.fixture(params=KINDS)
async def new_store(request: pytest.FixtureRequest, stores: Stores) -> AsyncIterator[StoreFactory]:
    """Makes empty stores of the parametrised kind; their clients close after the test."""
    kind: str = request.param
    async with stores.resources(kind) as resources:
        yield lambda: stores.make(kind, resources)


# -- ensure and the fingerprint --------------------------------------------------------------


async def test_ensure_is_idempotent(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    assert await store.ensure(FP)() == Ok(None)


async def test_ensure_with_another_fingerprint_names_both(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    res = await store.ensure(OTHER_FP)()
    assert isinstance(res, Err)
    assert res.error.code == ErrCode.SERVICE_SPECIFIC
    assert f"holds vectors from embedder {FP}, but the configured embedder is {OTHER_FP}" in res.error.msg
    assert res.error.meta["stored"] == str(FP)
    assert res.error.meta["configured"] == str(OTHER_FP)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "memory"])  # memory's data lives in its object
async def test_the_fingerprint_is_recorded_in_the_store(stores: Stores, kind: str) -> None:
    name = unique_name()
    async with stores.resources(kind) as resources:
        store = stores.make(kind, resources, name)
        assert ok(await store.stored_fingerprint()()) == (False, None)
        assert await store.ensure(FP)() == Ok(None)
    async with stores.resources(kind) as resources:
        reopened = stores.make(kind, resources, name)
        assert ok(await reopened.stored_fingerprint()()) == (True, FP)
        res = await reopened.ensure(OTHER_FP)()
    assert isinstance(res, Err)
    assert str(FP) in res.error.msg and str(OTHER_FP) in res.error.msg


async def test_ensure_on_a_store_with_rows_keeps_them_and_their_answers(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    for n in range(3):  # several commits, as several batches of a run make
        await store.upsert([rec(f"r{n}{i}", [1, n, i], text=f"row {n} {i}") for i in range(3)])()
    before = [(h.id, h.text, round(h.score, 5)) for h in await hits(store, [1, 1, 1])]
    assert await store.ensure(FP)() == Ok(None)
    assert ok(await store.count()()) == 9
    assert [(h.id, h.text, round(h.score, 5)) for h in await hits(store, [1, 1, 1])] == before


async def test_calls_before_ensure_are_db_errors(new_store: StoreFactory) -> None:
    store = new_store()
    for plan in (store.upsert([rec("a", [1, 0, 0])]), store.count(), store.query([1, 0, 0], 3)):
        res = await plan()
        assert isinstance(res, Err)
        assert res.error.code == ErrCode.DB_ERROR
        assert "run the ingest pipeline first" in res.error.msg


# -- writes -----------------------------------------------------------------------------------


async def test_upsert_writes_and_counts(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    assert ok(await store.upsert([rec("a", [1, 0, 0]), rec("b", [0, 1, 0])])()) == 2
    assert ok(await store.count()()) == 2


async def test_upsert_of_an_empty_batch_writes_nothing(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    assert ok(await store.upsert([])()) == 0


async def test_upsert_twice_is_a_no_op(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    batch = [rec("a", [1, 0, 0], tag="x"), rec("b", [0, 1, 0])]
    await store.upsert(batch)()
    assert ok(await store.upsert(batch)()) == 0
    assert ok(await store.count()()) == 2


async def test_upsert_replaces_changed_rows(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec("a", [1, 0, 0], text="old"), rec("b", [0, 1, 0])])()
    assert ok(await store.upsert([rec("a", [1, 0, 0], text="new"), rec("b", [0, 1, 0])])()) == 1
    [top, *_] = await hits(store, [1, 0, 0])
    assert (top.id, top.text) == ("a", "new")


async def test_upsert_counts_a_changed_meta_or_vector_as_a_change(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec("a", [1, 0, 0], lang="en"), rec("b", [0, 1, 0])])()
    assert ok(await store.upsert([rec("a", [1, 0, 0], lang="fr"), rec("b", [0, 1, 1])])()) == 2
    assert [h.meta for h in await hits(store, [1, 0, 0], lang="fr")] == [{"lang": "fr"}]


async def test_upsert_keeps_the_last_of_duplicate_ids(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    assert ok(await store.upsert([rec("a", [1, 0, 0], text="first"), rec("a", [1, 0, 0], text="last")])()) == 1
    [hit] = await hits(store, [1, 0, 0])
    assert hit.text == "last"


async def test_upsert_with_a_wrong_dimension_fails_and_writes_nothing(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    res = await store.upsert([rec("a", [1, 0, 0]), rec("b", [1, 0])])()
    assert isinstance(res, Err)
    assert res.error.code == ErrCode.DB_ERROR
    assert ok(await store.count()()) == 0


async def test_upsert_rejects_nan_values(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    res = await store.upsert([rec("a", [math.nan, 0, 0])])()
    assert isinstance(res, Err)
    assert res.error.code == ErrCode.DB_ERROR


@pytest.mark.parametrize(("field", "meta"), [("text", {}), ("meta.title", {"title": "a\udc80b"})])
async def test_a_record_no_store_can_encode_fails_alone_as_bad_input(
    new_store: StoreFactory, field: str, meta: dict[str, object]
) -> None:
    store = await ready(new_store)
    bad = rec("bad", [1, 0, 0], text="x\ud800y" if field == "text" else "fine", **meta)
    res = await store.upsert([rec("good", [0, 1, 0]), bad])()
    assert isinstance(res, Err)
    assert res.error.code == ErrCode.BAD_INPUT
    assert "record bad" in res.error.msg and field in res.error.msg and "surrogate" in res.error.msg
    assert ok(await store.count()()) == 0


async def test_any_string_id_round_trips(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    ids = ["a" * 64, "with space/and:colon", "ünï'cödé\"", "0"]
    assert ok(await store.upsert([rec(i, [1, n, 0]) for n, i in enumerate(ids)])()) == len(ids)
    assert [h.id for h in await hits(store, [1, 0, 0])] == ids
    assert ok(await store.existing_ids(ids)()) == set(ids)


# -- deleted sources are removed ----------------------------------------------------------------


async def test_delete_stale_removes_only_unkept_rows_of_that_source(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert(
        [rec("a1", [1, 0, 0], "A"), rec("a2", [0, 1, 0], "A"), rec("a3", [0, 0, 1], "A"), rec("b1", [1, 1, 0], "B")]
    )()
    assert ok(await store.delete_stale("A", ["a2"])()) == 2
    assert sorted(h.id for h in await hits(store, [1, 1, 1])) == ["a2", "b1"]


async def test_delete_stale_with_everything_kept_deletes_nothing(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec("a1", [1, 0, 0], "A")])()
    assert ok(await store.delete_stale("A", ["a1"])()) == 0
    assert ok(await store.delete_stale("missing", [])()) == 0


async def test_prune_deletes_whole_sources_of_its_origin_only(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert(
        [
            rec("a1", [1, 0, 0], "A"),
            rec("a2", [0, 1, 0], "A"),
            rec("b1", [0, 0, 1], "B"),
            rec("c1", [1, 1, 0], "C"),
            rec("x1", [1, 0, 1], "A", origin="other/load"),
        ]
    )()
    assert ok(await store.prune("p/load", ["A", "B"])()) == 3
    assert sorted(h.id for h in await hits(store, [1, 1, 1])) == ["c1", "x1"]


async def test_prune_with_kept_ids_deletes_only_stale_rows(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec("a1", [1, 0, 0], "A"), rec("a2", [0, 1, 0], "A"), rec("b1", [0, 0, 1], "B")])()
    assert ok(await store.prune("p/load", ["A", "B"], ["a2", "b1"])()) == 1
    assert sorted(h.id for h in await hits(store, [1, 1, 1])) == ["a2", "b1"]


async def test_prune_of_no_sources_deletes_nothing(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec("a1", [1, 0, 0], "A")])()
    assert ok(await store.prune("p/load", [])()) == 0
    assert ok(await store.prune("p/load", ["missing"])()) == 0
    assert ok(await store.count()()) == 1


async def test_existing_ids_are_the_stored_ones_among_those_asked(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    assert ok(await store.existing_ids([])()) == set()
    await store.upsert([rec("a1", [1, 0, 0], "A"), rec("b1", [0, 1, 0], "B")])()
    assert ok(await store.existing_ids(["a1", "zz", "a1", "b1"])()) == {"a1", "b1"}
    assert ok(await store.existing_ids(["zz"])()) == set()


async def test_source_ids_lists_the_distinct_sources_of_an_origin(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    assert ok(await store.source_ids("p/load")()) == []
    await store.upsert(
        [
            rec("b1", [1, 0, 0], "B"),
            rec("a1", [0, 1, 0], "A"),
            rec("a2", [0, 0, 1], "A"),
            rec("z", [1, 1, 0], "Z", origin="q/x"),
        ]
    )()
    assert ok(await store.source_ids("p/load")()) == ["A", "B"]
    assert ok(await store.source_ids("q/x")()) == ["Z"]


async def test_upsert_moves_a_row_to_its_new_origin(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec("a1", [1, 0, 0], "A", origin="")])()
    assert ok(await store.upsert([rec("a1", [1, 0, 0], "A")])()) == 1
    assert ok(await store.source_ids("p/load")()) == ["A"]
    assert ok(await store.source_ids("")()) == []


# -- reads: ordered by score, filtered -------------------------------------------------------------


async def test_query_ranks_by_cosine_best_first(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec("far", [-1, 0, 0]), rec("near", [1, 0.1, 0]), rec("mid", [1, 1, 0])])()
    result = await hits(store, [1, 0, 0])
    assert [h.id for h in result] == ["near", "mid", "far"]
    assert [h.score for h in result] == pytest.approx([1 / math.sqrt(1.01), 1 / math.sqrt(2), -1.0], abs=1e-6)


async def test_query_breaks_ties_by_id(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec(rid, [0, 1, 0]) for rid in ("c", "a", "b")])()
    assert [h.id for h in await hits(store, [0, 1, 0])] == ["a", "b", "c"]


async def test_query_returns_at_most_top_k(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec(str(i), [1, i, 0]) for i in range(5)])()
    assert [h.id for h in await hits(store, [1, 0, 0], k=2)] == ["0", "1"]


async def test_query_returns_text_source_and_meta(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec("a", [1, 0, 0], "doc", text="hello", path="a.md", chunk_index=0)])()
    [hit] = await hits(store, [1, 0, 0])
    assert (hit.id, hit.source_id, hit.text) == ("a", "doc", "hello")
    assert hit.meta == {"path": "a.md", "chunk_index": 0}


async def test_query_returns_nested_meta_as_written(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec("a", [1, 0, 0], tags=["x", "y"], doc={"lang": "en", "v": 2}, none=None)])()
    [hit] = await hits(store, [1, 0, 0])
    assert hit.meta == {"tags": ["x", "y"], "doc": {"lang": "en", "v": 2}, "none": None}


async def test_query_filters_on_meta_equality(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec("a", [1, 0, 0], lang="en"), rec("b", [1, 0, 0], lang="fr"), rec("c", [0, 1, 0])])()
    assert [h.id for h in await hits(store, [1, 0, 0], lang="fr")] == ["b"]
    assert await hits(store, [1, 0, 0], lang="de") == []


async def test_query_filters_on_every_key_given(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert(
        [rec("a", [1, 0, 0], lang="en", v=1), rec("b", [1, 0, 0], lang="en", v=2), rec("c", [0, 1, 0], lang="fr", v=2)]
    )()
    assert [h.id for h in await hits(store, [1, 0, 0], lang="en", v=2)] == ["b"]


async def test_query_filter_keeps_top_k_of_the_matching_rows(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec(f"n{i}", [1, i / 10, 0], lang="en") for i in range(6)] + [rec("f", [0, 1, 0], lang="fr")])()
    assert [h.id for h in await hits(store, [0, 1, 0], k=1, lang="fr")] == ["f"]
    assert [h.id for h in await hits(store, [1, 0, 0], k=2, lang="en")] == ["n0", "n1"]


async def test_query_filter_distinguishes_true_from_one(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec("a", [1, 0, 0], flag=True), rec("b", [1, 0, 0], flag=1)])()
    assert [h.id for h in await hits(store, [1, 0, 0], flag=True)] == ["a"]
    assert [h.id for h in await hits(store, [1, 0, 0], flag=1)] == ["b"]


async def test_query_with_a_zero_vector_scores_zero(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec("a", [1, 0, 0]), rec("z", [0, 0, 0])])()
    assert [(h.id, h.score) for h in await hits(store, [0, 0, 0])] == [("a", 0.0), ("z", 0.0)]


async def test_query_with_a_wrong_dimension_is_a_db_error(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    await store.upsert([rec("a", [1, 0, 0])])()
    res = await store.query([1, 0], 3)()
    assert isinstance(res, Err)
    assert res.error.code == ErrCode.DB_ERROR


async def test_plans_are_replayable(new_store: StoreFactory) -> None:
    store = await ready(new_store)
    plan = store.upsert([rec("a", [1, 0, 0])])
    assert ok(await plan()) == 1
    assert ok(await plan()) == 0


# -- retrieval modes ----------------------------------------------------------------------------


UNRANKED = [(k, m) for k in KINDS for m in ("keyword", "hybrid") if m not in MODES[k]]
RANKED = [(k, m) for k in KINDS for m in ("keyword", "hybrid") if m in MODES[k]]


@contextlib.asynccontextmanager
async def opened(kind: str, stores: Stores) -> AsyncIterator[VectorStorePort]:
    """A fresh, prepared store of ``kind``, its clients closed on exit."""
    async with stores.resources(kind) as resources:
        store = stores.make(kind, resources)
        assert await store.ensure(FP)() == Ok(None)
        yield store


@pytest.mark.parametrize(("kind", "mode"), UNRANKED)
async def test_a_mode_the_store_cannot_rank_by_fails_naming_it(stores: Stores, kind: str, mode: RetrievalMode) -> None:
    async with opened(kind, stores) as store:
        await store.upsert([rec("a1", [1, 0, 0], "A")])()
        res = await store.query([1.0, 0.0, 0.0], 3, text="a", mode=mode)()
    assert isinstance(res, Err)
    assert res.error.code == ErrCode.SERVICE_SPECIFIC
    assert mode in res.error.msg


@pytest.mark.parametrize(("kind", "mode"), RANKED)
async def test_a_text_mode_ranks_the_rows_holding_the_words_first(
    stores: Stores, kind: str, mode: RetrievalMode
) -> None:
    async with opened(kind, stores) as store:
        await store.upsert(
            [
                rec("pets", [0, 1, 0], text="cats and dogs sleep all day", lang="en"),
                rec("db", [1, 0, 0], text="vector databases store embeddings", lang="en"),
                rec("fr", [0, 0, 1], text="les chats dorment", lang="fr"),
            ]
        )()
        found = ok(await store.query([0.0, 0.0, 1.0], 2, {"lang": "en"}, text="where do cats sleep?", mode=mode)())
    assert isinstance(found, list)
    assert found[0].id == "pets"
    assert "fr" not in [h.id for h in found]
    assert [h.score for h in found] == sorted((h.score for h in found), reverse=True)


# -- every store answers as the exact reference does ------------------------------------------------

NONZERO = st.lists(st.integers(-3, 3), min_size=3, max_size=3).filter(any)
RECORDS = st.lists(
    st.tuples(st.sampled_from("abcdefgh"), NONZERO, st.sampled_from(["s1", "s2"]), st.sampled_from(["en", "fr"])),
    max_size=10,
)


@pytest.mark.parametrize("kind", [k for k in KINDS if k not in ("memory", "pgvector")])
@settings(max_examples=15, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=RECORDS, query=NONZERO, k=st.integers(1, 6), lang=st.sampled_from([None, "en"]))
async def test_every_store_answers_as_memory_does(
    stores: Stores,
    kind: str,
    records: list[tuple[str, list[int], str, str]],
    query: list[int],
    k: int,
    lang: str | None,
) -> None:
    async with stores.resources(kind) as resources:
        answers = []
        for store in (MemoryStore(), stores.make(kind, resources)):
            assert await store.ensure(FP)() == Ok(None)
            batch = [rec(rid, vec, source, lang=lg) for rid, vec, source, lg in records]
            written = ok(await store.upsert(batch)())
            again = ok(await store.upsert(batch)())
            deleted = ok(await store.delete_stale("s2", ["a", "b"])())
            pruned = ok(await store.prune("p/load", ["s1"], ["c", "d"])())
            sources = ok(await store.source_ids("p/load")())
            flt = {"lang": lang} if lang else {}
            found = await hits(store, query, k, **flt)
            assert [h.score for h in found] == sorted((h.score for h in found), reverse=True)
            answers.append((written, again, deleted, pruned, sources, tie_groups(found, k)))
        assert answers[0] == answers[1]


# -- filters a store cannot apply ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", EMBEDDED)
@pytest.mark.parametrize("value", [["x"], {"lang": "en"}, None, math.nan])
async def test_a_filter_on_a_non_scalar_is_refused_naming_the_store_and_key(
    stores: Stores, kind: str, value: object
) -> None:
    async with stores.resources(kind) as resources:
        store = stores.make(kind, resources)
        assert await store.ensure(FP)() == Ok(None)
        res = await store.query([1, 0, 0], 3, {"tags": value})()
    assert isinstance(res, Err)
    assert res.error.code == ErrCode.SERVICE_SPECIFIC
    assert kind in res.error.msg and "'tags'" in res.error.msg
