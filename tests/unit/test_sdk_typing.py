"""The SDK's public surface type-checks for a user: ``sdk_usage.py`` (typical user code
with ``assert_type`` on every result) passes mypy, and a misuse does not."""

from __future__ import annotations

from pathlib import Path

import pytest

api = pytest.importorskip("mypy.api")
HERE = Path(__file__).parent


def mypy(path: Path) -> tuple[int, str]:
    out, err, status = api.run([str(path), "--no-error-summary", "--follow-imports=silent",
                                "--cache-dir", str(HERE.parents[1] / ".mypy_cache")])
    return status, out + err


def test_user_code_sees_precise_types() -> None:
    status, out = mypy(HERE / "sdk_usage.py")
    assert status == 0, out


def test_a_wrong_type_is_reported(tmp_path: Path) -> None:
    misuse = tmp_path / "misuse.py"
    misuse.write_text("from typing import assert_type\n"
                      "from openweights import OpenWeights\n"
                      "ow = OpenWeights()\n"
                      "assert_type(ow.jobs.retrieve('j'), dict)\n"
                      "ow.files.upload('data.jsonl')\n")
    status, out = mypy(misuse)
    assert status == 1
    assert "assert-type" in out and "purpose" in out, out
