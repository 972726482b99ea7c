"""K-way merge in internal order and the reader's view of it (merge.py)."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore.lsm.coding import KIND_DELETE, KIND_VALUE
from kvstore.lsm.merge import merge_entries, merge_visible, visible


def internal(entries):
    return sorted(entries, key=lambda e: (e[0], -e[1]))


def test_merge_interleaves_sources_in_internal_order() -> None:
    a = [(b"a", 5, KIND_VALUE, b"a5"), (b"c", 1, KIND_VALUE, b"c1")]
    b = [(b"a", 7, KIND_DELETE, b""), (b"b", 2, KIND_VALUE, b"b2")]
    c: list = []
    assert list(merge_entries([a, b, c])) == [
        (b"a", 7, KIND_DELETE, b""), (b"a", 5, KIND_VALUE, b"a5"),
        (b"b", 2, KIND_VALUE, b"b2"), (b"c", 1, KIND_VALUE, b"c1")]
    assert list(merge_entries([])) == []
    assert list(merge_entries([a])) == a


def test_visible_hides_tombstones_newer_versions_and_stops_at_end() -> None:
    merged = [(b"a", 7, KIND_DELETE, b""), (b"a", 5, KIND_VALUE, b"a5"),
              (b"b", 9, KIND_VALUE, b"b9"), (b"b", 2, KIND_VALUE, b"b2"),
              (b"c", 1, KIND_VALUE, b"c1")]
    assert list(visible(merged, 10)) == [(b"b", b"b9"), (b"c", b"c1")]
    assert list(visible(merged, 6)) == [(b"a", b"a5"), (b"b", b"b2"), (b"c", b"c1")]
    assert list(visible(merged, 6, end=b"c")) == [(b"a", b"a5"), (b"b", b"b2")]
    assert list(visible(merged, 0)) == []


def test_visible_stops_at_end_even_when_nothing_is_visible_after_it() -> None:
    def endless():
        yield (b"a", 1, KIND_VALUE, b"x")
        n = 0
        while True:  # keys past `end`, all too new: the reader must stop, not scan on
            n += 1
            yield (b"z%09d" % n, 100, KIND_VALUE, b"")

    assert list(visible(endless(), 50, end=b"m")) == [(b"a", b"x")]


entry_lists = st.lists(
    st.lists(st.tuples(st.sampled_from([b"a", b"b", b"c", b"d", b"e"]),
                       st.booleans()), max_size=12),
    max_size=5,
)


def sources_from(groups) -> list[list]:
    """One internal-order source per group, oldest group first; sequence numbers rise
    across the groups in their order (a put's value names its seq)."""
    seq = 0
    sources = []
    for group in groups:
        entries = []
        for key, is_put in group:
            seq += 1
            entries.append((key, seq, KIND_VALUE if is_put else KIND_DELETE,
                            b"v%d" % seq if is_put else b""))
        sources.append(internal(entries))
    return sources


@settings(max_examples=100, deadline=None)
@given(entry_lists, st.integers(0, 70))
def test_merge_then_visible_matches_a_model(groups, snap) -> None:
    sources = sources_from(groups)
    model: dict[bytes, tuple[int, bytes | None]] = {}
    for key, seq, kind, value in sorted((e for src in sources for e in src),
                                        key=lambda e: e[1]):
        if seq <= snap:
            model[key] = (seq, value if kind == KIND_VALUE else None)
    merged = list(merge_entries(sources))
    assert merged == internal([e for s in sources for e in s])
    expected = [(k, v) for k, (_, v) in sorted(model.items()) if v is not None]
    assert list(visible(merged, snap)) == expected


@settings(max_examples=100, deadline=None)
@given(entry_lists, st.integers(0, 70), st.none() | st.sampled_from([b"a", b"c", b"e", b"z"]))
def test_merge_visible_equals_visible_of_merge(groups, snap, end) -> None:
    sources = sources_from(groups)
    sources.reverse()  # newest first, as merge_visible requires (the engine's order)
    assert list(merge_visible(sources, snap, end)) == list(
        visible(merge_entries(sources), snap, end))


def test_merge_visible_handles_chunk_boundaries_and_many_versions(monkeypatch) -> None:
    import kvstore.lsm.merge as merge

    monkeypatch.setattr(merge, "_CHUNK", 3)
    newest = [(b"k", 100 - i, KIND_VALUE, b"new%d" % i) for i in range(7)]  # one key
    older = internal([(b"%c" % c, 10, KIND_VALUE, b"old") for c in b"abcklmz"])
    oldest = internal([(b"%c" % c, 1, KIND_DELETE, b"") for c in b"bkqz"])
    got = list(merge.merge_visible([newest, older, oldest], 1000))
    assert got == [(b"a", b"old"), (b"b", b"old"), (b"c", b"old"), (b"k", b"new0"),
                   (b"l", b"old"), (b"m", b"old"), (b"z", b"old")]
    assert list(merge.merge_visible([newest, older, oldest], 50)) == [
        (b"a", b"old"), (b"b", b"old"), (b"c", b"old"), (b"k", b"old"), (b"l", b"old"),
        (b"m", b"old"), (b"z", b"old")]
    assert list(merge.merge_visible([newest, older, oldest], 5, end=b"q")) == []


@settings(max_examples=100, deadline=None)
@given(entry_lists, st.integers(0, 70), st.none() | st.sampled_from([b"a", b"c", b"e", b"z"]),
       st.integers(1, 4), st.randoms(use_true_random=False))
def test_merge_visible_runs_takes_runs_of_any_size(groups, snap, end, chunk, rng) -> None:
    """The scan's form: sources yield runs (table blocks, memtable chunks) of any size,
    some of them plain ((key, value) pairs, where every entry of the run is a value the
    snapshot sees, as a table block or memtable chunk says of itself); the concatenated
    output lists equal visible(merge_entries(...))."""
    import kvstore.lsm.merge as merge

    sources = sources_from(groups)
    sources.reverse()
    runs = []
    for entries in sources:
        cuts = sorted(rng.sample(range(1, len(entries)), min(3, max(0, len(entries) - 1))))
        bounds = [0, *cuts, len(entries)]
        source_runs = []
        for a, b in itertools.pairwise(bounds):
            run = entries[a:b]
            if run and rng.random() < 0.7 and all(
                    seq <= snap and kind == KIND_VALUE for _, seq, kind, _ in run):
                run = [(key, value) for key, _, _, value in run]  # plain
            if run:
                source_runs.append(run)
        runs.append(source_runs)
    old = merge._CHUNK
    merge._CHUNK = chunk
    try:
        out = [pair for run in merge.merge_visible_runs(runs, snap, end) for pair in run]
    finally:
        merge._CHUNK = old
    assert out == list(visible(merge_entries(sources), snap, end))
