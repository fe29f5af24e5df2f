"""Atomic outputs and record writers, including write -> read round trips (Hypothesis)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import stat
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compresslm.data import writers
from compresslm.data.readers import read_records
from compresslm.data.records import Record, Rejection
from compresslm.data.writers import (
    atomic_folder,
    atomic_output,
    check_not_input,
    check_outputs_free,
    json_line,
    write_records,
)
from compresslm.errors import ConfigError, DataError, OutputExistsError


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------ atomic_output


def test_atomic_output_writes_text_and_creates_parents(tmp_path):
    path = tmp_path / "a" / "b" / "out.txt"
    with atomic_output(path) as f:
        f.write("héllo\n")
        assert not path.exists()  # nothing visible until the write completes
    assert path.read_text(encoding="utf-8") == "héllo\n"
    assert leftovers(path.parent) == ["out.txt"]


def test_atomic_output_gives_new_files_the_usual_permissions(tmp_path):
    with atomic_output(tmp_path / "out.bin", mode="wb") as f:
        f.write(b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "out.bin").stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_atomic_output_leaves_nothing_when_interrupted(tmp_path, exc):
    path = tmp_path / "out.jsonl"
    with pytest.raises(type(exc)), atomic_output(path) as f:
        f.write("partial line")
        raise exc
    assert leftovers(tmp_path) == []


def test_atomic_output_keeps_the_old_file_when_a_forced_rewrite_fails(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_output(path, force=True) as f:
        f.write("new, but interrupted")
        raise KeyboardInterrupt
    assert path.read_text() == "old" and leftovers(tmp_path) == ["out.txt"]


def test_atomic_output_refuses_existing_files_without_force(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(OutputExistsError, match="--force"), atomic_output(path) as f:
        f.write("new")
    assert path.read_text() == "old"
    with atomic_output(path, force=True) as f:
        f.write("new")
    assert path.read_text() == "new" and leftovers(tmp_path) == ["out.txt"]


def test_atomic_output_does_not_clobber_a_file_created_during_the_write(tmp_path):
    path = tmp_path / "out.txt"
    with pytest.raises(OutputExistsError), atomic_output(path) as f:
        f.write("mine")
        path.write_text("someone else's")
    assert path.read_text() == "someone else's" and leftovers(tmp_path) == ["out.txt"]


def test_check_outputs_free_validates_all_outputs_up_front(tmp_path):
    (tmp_path / "exists.jsonl").write_text("x")
    (tmp_path / "afile").write_text("x")
    check_outputs_free([tmp_path / "new.jsonl", None, tmp_path / "exists.jsonl"], force=True)
    with pytest.raises(OutputExistsError, match="exists.jsonl"):
        check_outputs_free([tmp_path / "new.jsonl", tmp_path / "exists.jsonl"], force=False)
    with pytest.raises(ConfigError, match="two different outputs"):
        check_outputs_free([tmp_path / "x.jsonl", tmp_path / "." / "x.jsonl"])
    with pytest.raises(ConfigError, match="is a folder"):
        check_outputs_free([tmp_path], force=True)
    with pytest.raises(ConfigError, match="not a folder"):
        check_outputs_free([tmp_path / "afile" / "out.jsonl"])


# ------------------------------------------------------------------------------------ write_records


ROWS = [{"id": "a:1", "text": "héllo wörld", "score": 0.5}, {"id": "a:2", "text": "second", "score": -1.25}]


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz", "out.jsonl.zst", "out.parquet"])
def test_write_records_round_trips_by_extension(tmp_path, name):
    path = tmp_path / name
    assert write_records(path, iter(ROWS)) == 2
    assert [r.raw for r in read_records([path])] == ROWS
    with pytest.raises(OutputExistsError):
        write_records(path, ROWS)
    assert leftovers(tmp_path) == [name]


def test_jsonl_output_is_plain_utf8_and_deterministic(tmp_path):
    write_records(tmp_path / "a.jsonl", ROWS)
    assert (tmp_path / "a.jsonl").read_text(encoding="utf-8").splitlines()[0] == json.dumps(
        ROWS[0], ensure_ascii=False
    )
    write_records(tmp_path / "a.jsonl.gz", ROWS)
    write_records(tmp_path / "b.jsonl.gz", ROWS)
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()
    assert gzip.decompress((tmp_path / "a.jsonl.gz").read_bytes()) == (tmp_path / "a.jsonl").read_bytes()


def test_zstd_output_decompresses_with_the_reference_tool(tmp_path):
    write_records(tmp_path / "a.jsonl.zst", ROWS)
    with zstandard.open(tmp_path / "a.jsonl.zst", "rb") as f:
        assert [json.loads(line) for line in f.read().splitlines()] == ROWS


def test_parquet_columns_are_the_union_of_keys(tmp_path):
    rows = [{"text": "a"}, {"text": "b", "extra": 3}, {"text": "c", "meta": {"k": "v"}}]
    write_records(tmp_path / "u.parquet", rows)
    table = pq.read_table(tmp_path / "u.parquet")
    assert set(table.column_names) == {"text", "extra", "meta"}
    assert table.column("extra").to_pylist() == [None, 3, None]


def test_parquet_rows_that_do_not_fit_the_schema_fail_and_leave_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr("compresslm.data.writers.PARQUET_ROW_GROUP", 2)
    rows = [{"text": "a", "n": 1}, {"text": "b", "n": 2}, {"text": "c", "n": "not a number"}]
    with pytest.raises(DataError, match="rows 2..2 do not fit Parquet"):
        write_records(tmp_path / "bad.parquet", rows)
    assert leftovers(tmp_path) == []


def test_parquet_in_several_row_groups_reads_back_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr("compresslm.data.writers.PARQUET_ROW_GROUP", 3)
    rows = [{"text": f"doc {i}", "i": i} for i in range(10)]
    write_records(tmp_path / "g.parquet", rows)
    assert pq.ParquetFile(tmp_path / "g.parquet").num_row_groups == 4
    assert [r.raw for r in read_records([tmp_path / "g.parquet"])] == rows


def test_empty_outputs_are_valid_files(tmp_path):
    assert write_records(tmp_path / "e.jsonl", []) == 0
    assert write_records(tmp_path / "e.parquet", []) == 0
    assert list(read_records([tmp_path / "e.jsonl", tmp_path / "e.parquet"])) == []


def test_unknown_output_extension_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown output format"):
        write_records(tmp_path / "out.csv", ROWS)


def test_values_json_cannot_hold_are_converted_or_refused(tmp_path):
    when = dt.datetime(2024, 1, 2, 3, 4, 5)
    assert json.loads(json_line({"t": when, "b": b"ok", "x": b"\xff"})) == {
        "t": "2024-01-02T03:04:05",
        "b": "ok",
        "x": "/w==",
    }
    with pytest.raises(DataError, match="row 1"):
        write_records(tmp_path / "o.jsonl", [{"ok": 1}, {"bad": object()}])
    assert leftovers(tmp_path) == []


def test_lone_surrogates_are_escaped_and_read_back_as_malformed_text(tmp_path):
    write_records(tmp_path / "s.jsonl", [{"text": "a\ud800b"}, {"text": "fine", "other": "\udfff"}])
    out = list(read_records([tmp_path / "s.jsonl"], on_error="skip"))
    assert isinstance(out[0], Rejection) and out[0].reason.startswith("not UTF-8")
    assert out[1].text == "fine" and out[1].raw["other"] == "\udfff"


# --------------------------------------------------------------------------- property: round trips

json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
valid_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=200)


def expect_accepted(text: str) -> bool:
    return bool(text) and not text.isspace()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.dictionaries(st.text(max_size=8), json_values, max_size=5), max_size=8))
def test_property_jsonl_round_trips_arbitrary_records(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("rt") / "rows.jsonl"
    write_records(path, rows)
    out = list(read_records([path], on_error="skip"))
    assert len(out) == len(rows)
    assert [r.id for r in out] == [f"{path}:{i + 1}" for i in range(len(rows))]
    for item, row in zip(out, rows, strict=True):
        if isinstance(item, Record):
            assert item.raw == row
        else:  # the only reasons a record is refused: no usable "text" field
            assert not isinstance(row.get("text"), str) or not expect_accepted(row["text"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    texts=st.lists(valid_text, min_size=1, max_size=8), ext=st.sampled_from(["jsonl", "jsonl.zst", "parquet"])
)
def test_property_text_round_trips_exactly(tmp_path_factory, texts, ext):
    path = tmp_path_factory.mktemp("rt") / f"rows.{ext}"
    write_records(path, [{"text": t, "n": i} for i, t in enumerate(texts)])
    out = list(read_records([path]))
    assert [isinstance(r, Record) for r in out] == [expect_accepted(t) for t in texts]
    assert [r.text for r in out if isinstance(r, Record)] == [t for t in texts if expect_accepted(t)]
    assert [r.raw["n"] for r in out if isinstance(r, Record)] == [
        i for i, t in enumerate(texts) if expect_accepted(t)
    ]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {
                "text": valid_text,
                "n": st.integers(-(2**63), 2**63 - 1),
                "x": st.floats(allow_nan=False) | st.none(),
                "tags": st.lists(valid_text, max_size=3),
                "meta": st.fixed_dictionaries({"lang": valid_text, "ok": st.booleans()}),
            }
        ),
        min_size=1,
        max_size=8,
    )
)
def test_property_parquet_round_trips_typed_records(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("rt") / "rows.parquet"
    write_records(path, rows)
    out = list(read_records([path], on_error="skip"))
    assert [r.id for r in out] == [f"{path}:{i}" for i in range(len(rows))]
    assert [r.raw for r in out if isinstance(r, Record)] == [
        row for row in rows if expect_accepted(row["text"])
    ]


# ------------------------------------------------------------------------------------ atomic_folder


def test_atomic_folder_builds_beside_the_target_and_replaces_it_only_when_complete(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    seen = []
    with atomic_folder(out, force=True, owned=lambda p: (p / "old.txt").is_file()) as tmp:
        assert tmp.parent == tmp_path and tmp != out  # beside the target, never inside it
        (tmp / "new.txt").write_text("new")
        seen = leftovers(out)
    assert seen == ["old.txt"]  # the old output was untouched while the new one was built
    assert leftovers(out) == ["new.txt"]
    assert leftovers(tmp_path) == ["out"]  # no temporary or set-aside folder remains


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_atomic_folder_keeps_the_old_output_when_interrupted(tmp_path, exc):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(type(exc)), atomic_folder(out, force=True, owned=lambda p: True) as tmp:
        (tmp / "new.txt").write_text("partial")
        raise exc
    assert leftovers(out) == ["old.txt"] and leftovers(tmp_path) == ["out"]


def test_atomic_folder_force_replaces_only_a_recognised_output(tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(OutputExistsError), atomic_folder(out):
        pass
    not_ours = atomic_folder(out, force=True, owned=lambda p: False, what="a saved model")
    with pytest.raises(ConfigError, match="is not a saved model; --force only replaces"), not_ours:
        pass
    assert leftovers(out) == ["cat.jpg"] and leftovers(tmp_path) == ["photos"]


def test_atomic_folder_never_replaces_the_current_folder_or_one_above_it(tmp_path, monkeypatch):
    work = tmp_path / "work" / "sub"
    work.mkdir(parents=True)
    (work / "keep.txt").write_text("mine")
    monkeypatch.chdir(work)
    for target in (".", "..", str(work)):
        replace = atomic_folder(target, force=True, owned=lambda p: True)
        with pytest.raises(ConfigError, match="current folder"), replace:
            pass
    assert (work / "keep.txt").read_text() == "mine"
    assert leftovers(tmp_path / "work") == ["sub"]


def test_atomic_folder_fills_an_empty_folder_and_respects_the_umask(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(writers, "_umask", None)  # read afresh: the umask is cached per process
    old = os.umask(0o027)
    try:
        with atomic_folder(out) as tmp:
            (tmp / "x").write_text("x")
    finally:
        os.umask(old)
        writers._umask = None
    assert leftovers(out) == ["x"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o750  # not mkdtemp's 0o700


# ------------------------------------------------------------------------------------ check_not_input


def test_an_output_may_not_be_contain_or_lie_inside_an_input(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "a.txt").write_text("a")
    link = tmp_path / "link"
    link.symlink_to(corpus)
    cases = {
        corpus: "is also an input",
        link: "is also an input",  # the same folder through a symlink
        corpus / "sub" / "out.jsonl": "lies inside the input",
        tmp_path: "contains the input",
    }
    for out, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            check_not_input([out], [corpus])
    with pytest.raises(ConfigError, match="is also an input"):
        check_not_input([corpus / "a.txt"], [str(tmp_path / "corpus" / "*.txt")])  # globs expand
    check_not_input([tmp_path / "out", None], [corpus, "builtin:humaneval"])  # fine
