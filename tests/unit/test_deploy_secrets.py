"""`python -m openweights.deploy secrets`: the files agree and are never replaced unasked."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from openweights.adapters.nats.server_config import NatsAuthConfig
from openweights.deploy.__main__ import main


def test_the_secrets_agree_with_each_other(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    target = tmp_path / "secrets"
    assert main(["secrets", str(target)]) == 0
    read = {p.name: p.read_text() for p in target.iterdir()}
    auth = NatsAuthConfig.load_or_create(target / "nats_auth.json")
    assert f'SVC_PASSWORD: "{auth.svc_password}"' in read["nats_secrets.conf"]
    assert f'CALLOUT_ISSUER: "{auth.issuer}"' in read["nats_secrets.conf"]
    assert read["ow_nats_url"].startswith(f"nats://svc:{auth.svc_password}@nats-1:4222,")
    assert f":{read['postgres_password']}@postgres:5432/" in read["ow_database_url"]
    creds = json.loads(read["s3.json"])["identities"][0]["credentials"][0]
    assert creds == {"accessKey": read["ow_s3_access_key"],
                     "secretKey": read["ow_s3_secret_key"]}
    assert stat.S_IMODE(target.stat().st_mode) == 0o700


def test_existing_secrets_are_not_replaced_without_force(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "secrets"
    assert main(["secrets", str(target)]) == 0
    before = (target / "ow_nats_url").read_text()
    assert main(["secrets", str(target)]) == 1
    assert "exists" in capsys.readouterr().err
    assert (target / "ow_nats_url").read_text() == before
    assert main(["secrets", str(target), "--force"]) == 0
    assert (target / "ow_nats_url").read_text() != before
