"""When a fine-tuned model is pushed to the Hub: with ``HF_TOKEN`` only, and never while
``HF_HUB_OFFLINE`` is set (the run's output says why, instead of a failed run after
training). The push itself is tested against the Hub stand-in in
tests/lifecycle/test_finetuning.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from openweights.jobs.unsloth.results import push_to_hub


def test_no_token_no_push(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert push_to_hub(tmp_path, "me/model", private=True, checkpoints=[]) is None


@pytest.mark.parametrize("value", ["1", "true", "ON"])
def test_offline_mode_skips_the_push_and_says_so(
        value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert push_to_hub(tmp_path, "me/model", private=True, checkpoints=[]) is None
    out = capsys.readouterr().out
    assert "not pushed to me/model: HF_HUB_OFFLINE is set" in out
    assert "remove HF_HUB_OFFLINE from the secrets to push" in out
