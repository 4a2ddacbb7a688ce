"""Settings from a secrets directory (compose's /run/secrets): a file per setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from openweights.config import Settings
from openweights.services.provisioner.backends.local import agent_env


def test_a_secret_file_gives_a_setting_and_a_variable_wins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ow_database_url").write_text("postgresql://ow:pw@db/ow")
    (tmp_path / "ow_secret_key").write_text("from-file")
    monkeypatch.setenv("OW_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("OW_SECRET_KEY", "from-env")
    settings = Settings()
    assert settings.database_url == "postgresql://ow:pw@db/ow"
    assert settings.secret_key == "from-env"
    assert settings.secrets_dir == tmp_path
    # A machine never learns where the services' secrets are.
    assert "OW_SECRETS_DIR" not in agent_env(settings)


def test_a_missing_secrets_directory_is_refused_by_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OW_SECRETS_DIR", str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="absent is not a directory"):
        Settings()
