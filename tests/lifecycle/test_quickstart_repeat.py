"""A repeat of the quickstart (`ow demo`, issue 21, defect 8): the same params are the same
jobs, already done, so their events are labelled stored, not live; the download list
names every path the same way (under the output directory as given)."""

from __future__ import annotations

from pathlib import Path

import pytest

from openweights.config import Settings
from openweights.demo import quickstart
from openweights.demo.quickstart import main
from openweights.sdk.custom import REGISTERED


def test_a_repeat_demo_labels_stored_events_stored(
        full_stack: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in (("OW_NATS_URL", full_stack.nats_url),
                        ("OW_DATABASE_URL", full_stack.database_url),
                        ("OW_NAMESPACE", full_stack.namespace),
                        ("OW_HOME", str(full_stack.home))):
        monkeypatch.setenv(name, str(value))
    monkeypatch.chdir(tmp_path)
    # The quickstart's own job classes: other tests register theirs under the same names.
    monkeypatch.setitem(REGISTERED, "addition", quickstart.Addition)
    monkeypatch.setitem(REGISTERED, "loss_curve", quickstart.LossCurve)
    assert main("outs") == 14.0
    first = capsys.readouterr().out
    assert "  live: " in first
    assert main("outs") == 14.0
    again = capsys.readouterr().out
    assert "  live: " not in again and "  stored: " in again, again
    assert "already ran" in again
    listed = again.split("downloaded: ", 1)[1].strip().split(", ")
    assert listed and all(p.startswith("outs/") for p in listed), listed
