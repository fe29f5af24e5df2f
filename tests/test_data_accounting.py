"""Every record accounted for: read = selected + not selected + rejected, per source and in total."""

from __future__ import annotations

import json

import pytest

from compresslm.data.accounting import Accounting
from compresslm.data.readers import read_records
from compresslm.data.records import Record, Rejection, reason_kind
from compresslm.errors import CompressLMError, OutputExistsError


def rec(i: int, source: str = "a.jsonl") -> Record:
    return Record(id=f"{source}:{i}", source=source, index=i, text="t")


def rej(i: int, reason: str, source: str = "a.jsonl") -> Rejection:
    return Rejection(id=f"{source}:{i}", source=source, index=i, reason=reason)


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("bad JSON: Expecting value at column 3", "bad JSON"),
        ("over size limit (12 bytes > 10)", "over size limit"),
        ("empty: blank line", "empty"),
        ("empty", "empty"),
    ],
)
def test_reason_kind_is_the_prefix(reason, kind):
    assert reason_kind(reason) == kind


def test_pipeline_over_a_real_file_balances(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "a doc"}\n{"text": broken\n\n{"text": "b doc"}\n{"text": "c doc"}\n')
    acct = Accounting()
    accepted = []
    for item in read_records([path], on_error="skip"):
        acct.add(item)
        if isinstance(item, Record):
            accepted.append(item)
    for r in accepted[:2]:
        acct.add_selected(r)
    acct.check(scored=len(accepted))
    s = acct.summary()
    assert (s["read"], s["accepted"], s["rejected"], s["selected"], s["not_selected"]) == (5, 3, 2, 2, 1)
    assert s["rejected_by_reason"] == {"bad JSON": 1, "empty": 1}
    assert s["sources"][str(path)]["selected"] == 2
    assert s["read"] == s["selected"] + s["not_selected"] + s["rejected"]
    assert acct.summary_line() == "read 5: selected 2, not selected 1, rejected 2 (bad JSON 1, empty 1)"


def test_per_source_counts_and_set_selected():
    acct = Accounting()
    for i in range(3):
        acct.add_accepted(rec(i, "a"))
    acct.add_read("b", 4)
    acct.add_rejection(rej(9, "not UTF-8: invalid start byte at byte 2", "b"))
    acct.set_selected(5, by_source={"a": 2, "b": 3})
    acct.check()
    s = acct.summary()
    assert s["sources"]["a"] == {
        "read": 3, "accepted": 3, "rejected": 0, "selected": 2, "not_selected": 1, "rejected_by_reason": {}
    }  # fmt: skip
    assert s["sources"]["b"]["rejected_by_reason"] == {"not UTF-8": 1}
    assert (s["read"], s["not_selected"]) == (8, 2)


def test_totals_only_selection_leaves_per_source_selection_unknown():
    acct = Accounting()
    acct.add_read("a", 3)
    acct.mark_selected(2)
    acct.check()
    assert acct.summary()["sources"]["a"]["selected"] is None
    assert acct.summary()["selected"] == 2


@pytest.mark.parametrize(
    "break_it",
    [
        lambda a: a.set_selected(5),  # more selected than accepted
        lambda a: a.mark_selected(-4),
        lambda a: a.set_selected(1, by_source={"a": 2}),  # per-source does not add up
    ],
)
def test_check_catches_broken_invariants(break_it):
    acct = Accounting()
    acct.add_read("a", 3)
    break_it(acct)
    with pytest.raises(CompressLMError, match="accounting error"):
        acct.check()


def test_check_catches_documents_lost_before_scoring():
    acct = Accounting()
    acct.add_read("a", 3)
    with pytest.raises(CompressLMError, match="2 documents were scored but 3 were accepted"):
        acct.check(scored=2)


def test_rejects_file_lists_every_rejection_in_order(tmp_path):
    acct = Accounting()
    reasons = [f"bad JSON: problem {i}" for i in range(2500)]
    for i, reason in enumerate(reasons):
        acct.add_rejection(rej(i, reason))
    out = tmp_path / "rejects.jsonl"
    assert acct.write_rejects(out) == len(reasons)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0] == {"record_id": "a.jsonl:0", "source": "a.jsonl", "reason": "bad JSON: problem 0"}
    assert [r["reason"] for r in rows] == reasons
    with pytest.raises(OutputExistsError):
        acct.write_rejects(out)
    acct.add_rejection(rej(1, "empty"))  # still usable after writing
    acct.check()
    assert acct.write_rejects(out, force=True) == len(reasons) + 1
    acct.close()


def test_no_rejections_write_an_empty_rejects_file(tmp_path):
    with Accounting() as acct:
        acct.write_rejects(tmp_path / "r.jsonl")
    assert (tmp_path / "r.jsonl").read_text() == ""
