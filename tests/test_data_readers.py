"""Reading every input format into Records/Rejections: ids, order, errors, policy, streaming."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from compresslm.data import formats
from compresslm.data.readers import DEFAULT_MAX_BYTES, expand_inputs, read_records, read_texts
from compresslm.data.records import Record, Rejection, reason_kind
from compresslm.errors import ConfigError, DataError

TEXTS = ["first document", "zweites Dokument — ünïcödé", "third\nwith\nlines", "def f():\n    return 4\n"]


def write_jsonl(path: Path, rows: list[dict], opener=open) -> Path:
    with opener(path, "wb") as f:
        for row in rows:
            f.write(json.dumps(row).encode() + b"\n")
    return path


def raw_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def items(paths, **kw) -> list[Record | Rejection]:
    return list(read_records(paths, **kw))


def texts_and_ids(out):
    return [(r.id, r.text) for r in out if isinstance(r, Record)]


# ------------------------------------------------------------------------------------ round trips


def zst_open(path, mode):
    return zstandard.open(path, mode)


@pytest.mark.parametrize(
    ("name", "opener"), [("a.jsonl", open), ("a.jsonl.gz", gzip.open), ("a.jsonl.zst", zst_open)]
)
def test_jsonl_formats_round_trip_text_ids_and_raw(tmp_path, name, opener):
    path = write_jsonl(tmp_path / name, [{"text": t, "n": i} for i, t in enumerate(TEXTS)], opener)
    out = items([path])
    assert texts_and_ids(out) == [(f"{path}:{i + 1}", t) for i, t in enumerate(TEXTS)]
    assert [r.index for r in out] == list(range(len(TEXTS)))
    assert all(r.source == str(path) for r in out)
    assert out[1].raw == {"text": TEXTS[1], "n": 1}


def test_json_array_ids_are_rows_and_stream_across_read_chunks(tmp_path):
    # Elements far larger than the reader's chunk exercise the refill path.
    big = "x" * (3 * formats._CHUNK) + "end"
    rows = [{"text": t} for t in [*TEXTS, big]] + [{"text": "tail", "num": 12345678901234567890}]
    path = tmp_path / "a.json"
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    out = items([path])
    assert texts_and_ids(out) == [(f"{path}:{i}", r["text"]) for i, r in enumerate(rows)]
    assert out[-1].raw == rows[-1]


def test_json_file_of_objects_is_read_as_json_lines(tmp_path):
    path = write_jsonl(tmp_path / "export.json", [{"text": t} for t in TEXTS])
    assert texts_and_ids(items([path])) == [(f"{path}:{i + 1}", t) for i, t in enumerate(TEXTS)]


def test_json_array_elements_that_are_not_objects_are_malformed(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[{"text": "ok doc"}, 3, "s", {"text": "also ok"}]')
    out = items([path], on_error="skip")
    assert [type(r).__name__ for r in out] == ["Record", "Rejection", "Rejection", "Record"]
    assert out[1].reason.startswith("bad JSON: expected an object")
    with pytest.raises(DataError, match=rf"^{path}:1: bad JSON"):
        items([path])


@pytest.mark.parametrize(
    "body", ['[{"text": "a"} {"text": "b"}]', '[{"text": "a"}, {"text": ', '[{"text": "a"}] x']
)
def test_json_syntax_errors_are_fatal_even_when_skipping(tmp_path, body):
    path = tmp_path / "a.json"
    path.write_text(body)
    with pytest.raises(DataError, match=str(path)):
        items([path], on_error="skip")


def test_empty_json_array_and_empty_files_hold_no_records(tmp_path):
    (tmp_path / "a.json").write_text(" [ ] ")
    (tmp_path / "b.json").write_text("")
    (tmp_path / "c.jsonl").write_text("")
    assert items([tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.jsonl"]) == []


def test_parquet_rows_are_dicts_with_row_ids(tmp_path):
    path = tmp_path / "a.parquet"
    table = pa.table({"text": TEXTS, "meta": [{"lang": "en", "n": i} for i in range(len(TEXTS))]})
    pq.write_table(table, path, row_group_size=2)
    out = items([path])
    assert texts_and_ids(out) == [(f"{path}:{i}", t) for i, t in enumerate(TEXTS)]
    assert out[2].raw == {"text": TEXTS[2], "meta": {"lang": "en", "n": 2}}
    assert texts_and_ids(items([path], text_field="meta.lang")) == [(f"{path}:{i}", "en") for i in range(4)]


def test_txt_file_is_one_document_with_the_path_as_id(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text("one whole\n\ndocument\n")
    (out,) = items([path])
    assert (out.id, out.text, out.raw) == (str(path), "one whole\n\ndocument\n", None)


def test_folder_reads_every_regular_file_recursively_sorted_skipping_hidden(tmp_path):
    root = tmp_path / "docs"
    for rel, text in {"b.md": "bee", "a/z.txt": "zed", "a/b/c": "see", "A.txt": "upper"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / ".hidden").write_text("secret")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("secret")
    out = items([root])
    assert [(r.id, r.text) for r in out] == [
        (str(root / "A.txt"), "upper"),
        (str(root / "a" / "b" / "c"), "see"),
        (str(root / "a" / "z.txt"), "zed"),
        (str(root / "b.md"), "bee"),
    ]
    assert {r.source for r in out} == {str(root)}


def arrow_stream(path: Path, table: pa.Table) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=2):
            writer.write_batch(batch)


def test_hf_saved_dataset_folder_is_read_from_arrow_streams_in_state_order(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    arrow_stream(folder / "data-00001-of-00002.arrow", pa.table({"text": ["c", "d", "e"]}))
    arrow_stream(folder / "data-00000-of-00002.arrow", pa.table({"text": ["a", "b"]}))
    files = [{"filename": "data-00000-of-00002.arrow"}, {"filename": "data-00001-of-00002.arrow"}]
    (folder / "state.json").write_text(json.dumps({"_data_files": files}))
    (folder / "dataset_info.json").write_text("{}")
    assert texts_and_ids(items([folder])) == [(f"{folder}:{i}", t) for i, t in enumerate("abcde")]


def test_dataset_saved_by_the_datasets_library_round_trips(tmp_path):
    datasets = pytest.importorskip("datasets")  # a dependency of the zip-fit test extra
    rows = {"text": TEXTS, "label": list(range(len(TEXTS)))}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "ds"))
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(rows),
            "test": datasets.Dataset.from_dict({"text": ["t"], "label": [9]}),
        }
    ).save_to_disk(str(tmp_path / "dd"))
    out = items([tmp_path / "ds", tmp_path / "dd" / "train"])
    ds, dd = out[: len(TEXTS)], out[len(TEXTS) :]
    assert [(r.id, r.text, r.raw["label"]) for r in ds] == [
        (f"{tmp_path / 'ds'}:{i}", t, i) for i, t in enumerate(TEXTS)
    ]
    assert [r.id for r in dd] == [f"{tmp_path / 'dd' / 'train'}:{i}" for i in range(4)]
    # The whole DatasetDict would mix its test split into the data: refused, naming the split folders.
    with pytest.raises(DataError, match=r"DatasetDict with 2 splits \(train, test\).*dd/train, .*dd/test"):
        items([tmp_path / "dd"])
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "one"))
    assert [r.id for r in items([tmp_path / "one"])] == [
        f"{tmp_path / 'one' / 'train'}:{i}" for i in range(4)
    ]


def test_builtin_names_read_with_domains_and_stable_ids():
    out = items(["builtin:humaneval-test", "builtin:python-targets:3"])
    assert len(out) == 85 and all(isinstance(r, Record) for r in out)
    assert out[0].id == "builtin:humaneval:HumanEval/82" and out[0].domain == "python"
    assert [r.id for r in out[82:]] == [f"builtin:python-targets:{i}" for i in range(3)]
    assert out[0].raw["prompt"] in out[0].text
    prompts = items(["builtin:humaneval-target"], template="{prompt}")
    assert all(r.text == r.raw["prompt"] for r in prompts)


def test_unknown_extension_and_unknown_builtin_name_the_input(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("x")
    with pytest.raises(DataError, match="a.csv: unknown input format"):
        items([path])
    with pytest.raises(DataError, match="builtin:nope"):
        read_records(["builtin:nope"])


# -------------------------------------------------------------------------------- expand_inputs


def test_globs_expand_sorted_and_duplicates_are_read_once(tmp_path):
    for name in ["b.jsonl", "a.jsonl", "c.txt"]:
        (tmp_path / name).write_text('{"text": "x"}\n')
    got = expand_inputs([tmp_path / "*.jsonl", str(tmp_path / "a.jsonl"), "builtin:pool"])
    assert got == [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "builtin:pool"]
    assert expand_inputs([str(tmp_path / "**" / "*.txt")]) == [str(tmp_path / "c.txt")]


def test_missing_paths_and_empty_globs_fail_before_reading(tmp_path):
    with pytest.raises(DataError, match="no such file or folder: .*nope.jsonl"):
        read_records([tmp_path / "nope.jsonl"])
    with pytest.raises(DataError, match="no such file or folder: .*matches nothing"):
        read_records([str(tmp_path / "*.parquet")])


# ------------------------------------------------------------------------------- malformed input


def bad_jsonl(tmp_path: Path) -> Path:
    return raw_lines(
        tmp_path / "bad.jsonl",
        [
            b'{"text": "good one"}',
            b'{"text": broken',
            b'{"other": "no text field"}',
            b'{"text": 42}',
            b'{"text": "caf\xe9 in latin-1"}',
            b'{"text": "lone \\ud800 surrogate"}',
            b"[1, 2]",
            b'{"text": "good two"}',
        ],
    )


def test_malformed_lines_fail_with_path_and_line(tmp_path):
    path = bad_jsonl(tmp_path)
    reader = read_records([path])
    assert next(reader).text == "good one"
    with pytest.raises(DataError, match=rf"^{path}:2: bad JSON: "):
        next(reader)


def test_skip_mode_yields_a_rejection_for_every_malformed_record(tmp_path):
    path = bad_jsonl(tmp_path)
    out = items([path], on_error="skip")
    assert [r.index for r in out] == list(range(8))
    assert [r.text for r in out if isinstance(r, Record)] == ["good one", "good two"]
    reasons = {int(r.id.rsplit(":", 1)[1]): r.reason for r in out if isinstance(r, Rejection)}
    assert {line: reason_kind(reason) for line, reason in reasons.items()} == {
        2: "bad JSON",
        3: "missing field",
        4: "not a string",
        5: "not UTF-8",
        6: "not UTF-8",
        7: "bad JSON",
    }
    bad_at = len(b'{"text": "caf')
    assert "U+D800" in reasons[6] and f"at byte {bad_at}" in reasons[5]
    for line in (3, 4, 5, 6, 7):  # each of them is fatal by default
        one = raw_lines(
            tmp_path / f"{line}.jsonl", [b'{"text": "fine"}', path.read_bytes().splitlines()[line - 1]]
        )
        with pytest.raises(DataError, match=rf"^{one}:2: {reason_kind(reasons[line])}: "):
            items([one])


def test_non_utf8_text_files_are_malformed(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("café".encode("latin-1"))
    (rej,) = items([path], on_error="skip")
    assert rej.id == str(path) and rej.reason.startswith("not UTF-8")
    with pytest.raises(DataError, match=f"{path}: not UTF-8"):
        items([path])


def test_non_utf8_json_array_is_fatal_with_byte_offset(tmp_path):
    path = tmp_path / "a.json"
    head = b'[{"text": "ok"}, {"text": "caf'
    path.write_bytes(head + b'\xe9"}]')
    with pytest.raises(DataError, match=f"{path}: not UTF-8: .* at byte {len(head)}$"):
        items([path], on_error="skip")


def test_template_builds_text_and_missing_field_is_malformed(tmp_path):
    path = write_jsonl(
        tmp_path / "he.jsonl",
        [{"prompt": "def f():\n", "canonical_solution": "    return 1\n"}, {"prompt": "only prompt"}],
    )
    tpl = "{prompt}\n{canonical_solution}"
    out = items([path], template=tpl, on_error="skip")
    assert out[0].text == "def f():\n\n    return 1\n"
    assert out[1].reason == "missing field: 'canonical_solution' (fields: prompt)"  # what exists
    with pytest.raises(DataError, match=f"{path}:2: missing field"):
        items([path], template=tpl)
    with pytest.raises(ConfigError):
        read_records([path], template="{} positional")


def test_dotted_text_field_walks_nested_objects_unless_the_key_exists(tmp_path):
    path = write_jsonl(
        tmp_path / "n.jsonl", [{"meta": {"text": "nested"}}, {"meta.text": "flat key"}, {"meta": "x"}]
    )
    out = items([path], text_field="meta.text", on_error="skip")
    assert [getattr(r, "text", None) for r in out] == ["nested", "flat key", None]
    assert out[2].reason == "missing field: 'meta.text' (fields: meta)"


def test_domain_field_labels_records(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a doc", "src": {"d": "web"}}, {"text": "b doc"}])
    assert [r.domain for r in items([path], domain_field="src.d")] == ["web", None]


# ------------------------------------------------------------------------------------- policy


def test_blank_lines_are_counted_as_empty_rejections_not_dropped(tmp_path):
    path = raw_lines(tmp_path / "b.jsonl", [b'{"text": "a doc"}', b"", b"   \r", b'{"text": "b doc"}'])
    out = items([path])  # policy, so not fatal even with on_error="fail"
    assert [(r.id, getattr(r, "reason", None)) for r in out] == [
        (f"{path}:1", None),
        (f"{path}:2", "empty: blank line"),
        (f"{path}:3", "empty: blank line"),
        (f"{path}:4", None),
    ]


def test_empty_and_whitespace_texts_are_rejected_as_empty(tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", [{"text": ""}, {"text": " \n\t"}, {"text": " x "}])
    out = items([path])
    assert [reason_kind(r.reason) for r in out[:2]] == ["empty", "empty"]
    assert out[2].text == " x "  # text is never stripped or altered


def test_size_limits_reject_never_truncate(tmp_path):
    docs = ["a" * 10, "é" * 6, "b" * 11, "c" * 2]  # "é" is 2 bytes: 12 bytes
    path = write_jsonl(tmp_path / "s.jsonl", [{"text": t} for t in docs])
    out = items([path], max_bytes=10, min_bytes=3)
    assert out[0].text == docs[0]
    assert out[1].reason == "over size limit (12 bytes > 10)"
    assert out[2].reason == "over size limit (11 bytes > 10)"
    assert out[3].reason == "under min size (2 bytes < 3)"
    assert DEFAULT_MAX_BYTES == 1_000_000
    with pytest.raises(ConfigError):
        read_records([path], max_bytes=2, min_bytes=3)


def test_oversized_text_file_is_rejected_without_being_read(tmp_path):
    path = tmp_path / "big.txt"
    path.write_bytes(b"\xff" * 100)  # not UTF-8 either, but the size check comes first
    (rej,) = items([path], max_bytes=50)
    assert rej.reason == "over size limit (100 bytes > 50)"


def test_overlong_jsonl_line_is_rejected_and_reading_resumes(tmp_path):
    rows = [{"text": "a doc"}, {"text": "y" * 5000}, {"text": "b doc"}]
    path = write_jsonl(tmp_path / "l.jsonl", rows)
    out = items([path], max_line_bytes=1000)
    line_size = len(json.dumps(rows[1])) + 1
    assert out[1].reason == f"over size limit (line of {line_size} bytes > 1000)"
    assert [r.text for r in out if isinstance(r, Record)] == ["a doc", "b doc"]
    assert [r.id for r in out] == [f"{path}:{i}" for i in (1, 2, 3)]


def test_bom_at_start_of_jsonl_is_not_data(tmp_path):
    path = raw_lines(tmp_path / "bom.jsonl", [b'\xef\xbb\xbf{"text": "a doc"}'])
    assert items([path])[0].text == "a doc"


# ---------------------------------------------------------------------------- truncated streams


def compressed_rows(n: int) -> bytes:
    return b"".join(json.dumps({"text": f"document number {i} " * 5}).encode() + b"\n" for i in range(n))


@pytest.mark.parametrize("ext", [".jsonl.gz", ".jsonl.zst"])
def test_truncated_compressed_file_is_a_data_error_naming_the_file(tmp_path, ext):
    data = compressed_rows(2000)
    blob = gzip.compress(data) if ext.endswith("gz") else zstandard.ZstdCompressor().compress(data)
    path = tmp_path / f"cut{ext}"
    path.write_bytes(blob[: len(blob) * 2 // 3])
    with pytest.raises(DataError, match=str(path)):
        for _ in read_records([path]):
            pass


def test_multi_frame_zstd_reads_every_frame(tmp_path):
    path = tmp_path / "frames.jsonl.zst"
    cctx = zstandard.ZstdCompressor()
    path.write_bytes(cctx.compress(compressed_rows(3)) + cctx.compress(compressed_rows(2)))
    assert len(items([path])) == 5


def test_indices_count_across_inputs_and_read_texts_returns_accepted(tmp_path, caplog):
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": "one"}, {"text": ""}])
    b = tmp_path / "b.txt"
    b.write_text("two")
    out = items([a, b])
    assert [(r.index, r.source) for r in out] == [(0, str(a)), (1, str(a)), (2, str(b))]
    assert read_texts([a, b]) == ["one", "two"]
    assert "1 records rejected" in caplog.text


def test_reader_streams_without_loading_the_file(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"text": f"doc {i}"} for i in range(1000)])
    reader = read_records([path])
    first = next(reader)
    with open(path, "ab") as f:  # the reader has not slurped the file: appended lines are seen
        f.write(b'{"text": "appended"}\n')
    assert first.text == "doc 0"
    assert list(reader)[-1].text == "appended"


def test_bad_on_error_value_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="on-error"):
        read_records([tmp_path], on_error="ignore")  # type: ignore[arg-type]


def test_symlinked_folders_are_not_followed(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.txt").write_text("a")
    os.symlink(root, root / "loop")
    assert [r.text for r in items([root])] == ["a"]


# ------------------------------------------------------------------------ shards, hostile input


def test_folder_of_shards_is_read_as_records_by_each_files_format(tmp_path):
    root = tmp_path / "shards"
    root.mkdir()
    write_jsonl(root / "00.jsonl", [{"text": "a"}, {"text": "b"}])
    write_jsonl(root / "01.jsonl.zst", [{"text": "c"}], zst_open)
    pq.write_table(pa.table({"text": ["d", "e"]}), root / "02.parquet")
    (root / "README.txt").write_text("plain text stays one document")
    out = items([root])
    assert texts_and_ids(out) == [
        (f"{root / '00.jsonl'}:1", "a"),
        (f"{root / '00.jsonl'}:2", "b"),
        (f"{root / '01.jsonl.zst'}:1", "c"),
        (f"{root / '02.parquet'}:0", "d"),
        (f"{root / '02.parquet'}:1", "e"),
        (str(root / "README.txt"), "plain text stays one document"),
    ]
    assert [r.index for r in out] == list(range(6)) and {r.source for r in out} == {str(root)}


@pytest.mark.parametrize(
    ("value", "why"),
    [("1" * 4301, "an integer of 4,301 digits"), ("NaN", "NaN is not"), ("-Infinity", "-Infinity is not")],
)
def test_unsafe_json_numbers_are_malformed_records_not_crashes(tmp_path, value, why):
    path = raw_lines(
        tmp_path / "n.jsonl", [b'{"text": "ok"}', b'{"text": "x", "n": ' + value.encode() + b"}"]
    )
    out = items([path], on_error="skip")
    assert isinstance(out[0], Record) and isinstance(out[1], Rejection)
    assert out[1].reason.startswith("bad JSON") and why in out[1].reason
    with pytest.raises(DataError, match=f"n.jsonl:2: bad JSON: .*{why}"):
        items([path])
    array = tmp_path / "n.json"
    array.write_text('[{"text": "ok"}, {"text": "x", "n": ' + value + "}]")
    with pytest.raises(DataError, match=f"n.json:1: bad JSON: .*{why}"):
        items([array])
    assert isinstance(
        items([raw_lines(tmp_path / "ok.jsonl", [b'{"text": "x", "n": ' + b"9" * 4300 + b"}"])])[0], Record
    )


def test_json_message_does_not_say_at_twice(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "unterminated')  # json says "Unterminated string starting at"
    (rej,) = items([path], on_error="skip")
    assert rej.reason == "bad JSON: Unterminated string starting at column 10"


def test_fifo_and_socket_are_refused_at_once_not_waited_on(tmp_path):
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="pipe.jsonl: is a FIFO, not a regular file"):
        items([fifo])  # would block forever in open() without the check
    import socket

    sock_path = tmp_path / "s.jsonl"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        with pytest.raises(DataError, match="s.jsonl: is a socket"):
            items([sock_path])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_file_and_folder_are_clear_errors(tmp_path):
    path = write_jsonl(tmp_path / "locked.jsonl", [{"text": "a"}])
    path.chmod(0)
    with pytest.raises(DataError, match="locked.jsonl: cannot read: Permission denied"):
        items([path])
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "sub" / "b.txt").write_text("b")
    (root / "sub").chmod(0)
    try:
        with pytest.raises(DataError, match="sub: cannot list this folder"):
            items([root])  # os.walk would silently skip sub/ and lose b.txt
    finally:
        (root / "sub").chmod(0o755)
