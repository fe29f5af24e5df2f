"""The one versioned-JSON reader refuses, naming the file, whatever it cannot trust."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compresslm.data.jsonfile import read_versioned_json, write_json
from compresslm.errors import IntegrityError, OutputExistsError


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "invalid JSON"),
        (b"\xff\xfe", "invalid JSON"),
        ('["format", "x"]', "not a x file"),
        ('{"format": "y", "format_version": 1}', "not a x file"),
        ('{"format": "x"}', "format_version None is not supported"),
    ],
)
def test_refusals_name_the_file(tmp_path: Path, content: str | bytes, message: str) -> None:
    path = tmp_path / "meta.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(IntegrityError, match=message) as info:
        read_versioned_json(path, "x", 1)
    assert str(path) in str(info.value)


def test_write_json_is_atomic_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = write_json(tmp_path / "r.json", {"a": np.float32(0.5), "b": np.arange(2), "c": tmp_path})
    assert path.read_text().endswith("}\n")
    with pytest.raises(OutputExistsError):
        write_json(path, {})
    write_json(path, {"format": "x", "format_version": 1}, force=True)
    assert read_versioned_json(path, "x", 1) == {"format": "x", "format_version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary left behind
