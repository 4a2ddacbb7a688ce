"""compose.yaml against the package: every command exists, every variable is a setting,
every mounted file exists, every secret is generated, and auth cannot be off (a real
nats-server started from deploy/nats/nats.conf refuses a connection without credentials).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import anyio
import nats
import pytest
import yaml

from openweights import images
from openweights.adapters.embedded import free_port, nats_server_binary, wait_accepting
from openweights.config import Settings
from openweights.deploy.secrets import Topology, generate, write

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
OURS = {name: s for name, s in SERVICES.items() if "openweights" in s["image"]}
NATS_CONF = ROOT / "deploy" / "nats" / "nats.conf"
# Supplied by the operator (docs/deploy.md), not generated.
OPERATOR_SECRETS = {"ow_runpod_api_key"}


def _module(command: list[str]) -> str:
    assert command[:2] == ["python", "-m"], command
    return command[2]


def test_the_stack_has_every_part_and_two_of_each_service_that_may_run_twice() -> None:
    assert {"nats-1", "nats-2", "nats-3", "postgres", "seaweedfs", "api", "projector",
            "scheduler", "provisioner", "dashboard"} <= set(SERVICES)
    replicas = {name: s.get("deploy", {}).get("replicas", 1) for name, s in OURS.items()}
    assert replicas["api"] == replicas["projector"] == replicas["scheduler"] == 2
    assert replicas["provisioner"] == 1  # one backend owner: it starts paid machines
    assert all(s.get("restart") in ("unless-stopped", "on-failure") for s in SERVICES.values())


def test_every_command_is_a_runnable_module_of_the_package() -> None:
    for name, service in OURS.items():
        module = _module(service["command"])
        spec = importlib.util.find_spec(module)
        assert spec is not None, f"{name}: no module {module}"
        if spec.submodule_search_locations is not None:  # a package needs its __main__
            assert importlib.util.find_spec(f"{module}.__main__") is not None, name
    health = OURS["api"]["healthcheck"]["test"]
    assert importlib.util.find_spec(_module(health[1:])) is not None


def test_every_variable_and_service_secret_is_a_known_setting() -> None:
    fields = set(Settings.model_fields)
    for name, service in OURS.items():
        for var in service["environment"]:
            assert var.startswith("OW_") and var[3:].lower() in fields, f"{name}: {var}"
        for secret in service.get("secrets", []):
            target = secret if isinstance(secret, str) else secret["target"]
            if target.startswith("ow_"):
                assert target[3:] in fields, f"{name}: secret {target} is no setting"


def test_auth_is_on_in_every_service_and_replicas_are_three() -> None:
    for name, service in OURS.items():
        env = service["environment"]
        assert env["OW_AUTH"] == "true", name
        assert env["OW_STREAM_REPLICAS"] == "3", name
        assert env["OW_SECRETS_DIR"] == "/run/secrets", name
        # No password in the file: URLs and keys come from secrets.
        assert not {"OW_NATS_URL", "OW_DATABASE_URL", "OW_SECRET_KEY", "OW_S3_SECRET_KEY",
                    "OW_S3_ACCESS_KEY", "OW_RUNPOD_API_KEY"} & set(env), name
        assert {"ow_nats_url", "ow_database_url"} <= set(service["secrets"]), name
    assert "OW_NATS_AUTH_FILE" in OURS["api"]["environment"]  # the callout runs there
    text = (ROOT / "compose.yaml").read_text()
    assert not re.search(r"://[^/\s@]+:[^/\s@]+@", text)  # no user:password@ in a URL
    assert "POSTGRES_PASSWORD:" not in text


def test_every_mounted_file_exists_and_every_secret_is_generated() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).is_file(), f"{name}: {source} is missing"
    files = {Path(s["file"]).name for s in COMPOSE["secrets"].values()}
    assert files - OPERATOR_SECRETS == set(generate())
    for name, service in SERVICES.items():
        for secret in service.get("secrets", []):
            source = secret if isinstance(secret, str) else secret["source"]
            assert source in COMPOSE["secrets"], f"{name}: secret {source} is not declared"


def test_images_are_pinned_and_ours_is_the_one_images_py_names() -> None:
    for name, service in SERVICES.items():
        image = service["image"]
        tag = image.rsplit(":", 1)[-1]
        assert ":" in image and tag != "latest" and any(c.isdigit() for c in tag), name
    assert OURS["api"]["image"].endswith(f":-{images.CONTROL_PLANE}}}")


def test_the_nats_config_syncs_always_and_runs_the_callout() -> None:
    conf = NATS_CONF.read_text()
    lines = [line.split("#")[0].strip() for line in conf.splitlines()]
    assert "sync_interval: always" in lines
    assert "auth_callout {" in lines and "include \"./nats_secrets.conf\"" in lines
    assert not any(line.startswith("no_auth_user") for line in lines)
    for service in ("nats-1", "nats-2", "nats-3"):
        command = SERVICES[service]["command"]
        assert command == ["-c", "/etc/nats/nats.conf"]
        assert "./deploy/nats/nats.conf:/etc/nats/nats.conf:ro" in SERVICES[service]["volumes"]


def _node_env(tmp: Path) -> tuple[dict[str, str], int]:
    port = free_port()
    return {**os.environ, "NATS_NAME": "nats-1", "NATS_LISTEN": f"127.0.0.1:{port}",
            "NATS_HTTP": f"127.0.0.1:{free_port()}",
            "NATS_CLUSTER_LISTEN": f"127.0.0.1:{free_port()}",
            "NATS_STORE": str(tmp / "store")}, port


def test_the_nats_config_refuses_to_start_without_its_secrets(tmp_path: Path) -> None:
    shutil.copy(NATS_CONF, tmp_path / "nats.conf")
    env, _ = _node_env(tmp_path)
    done = subprocess.run([nats_server_binary(), "-c", str(tmp_path / "nats.conf"), "-t"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "nats_secrets.conf" in done.stdout + done.stderr


@pytest.mark.timeout(60)
def test_a_node_from_the_config_admits_no_one_without_credentials(tmp_path: Path) -> None:
    shutil.copy(NATS_CONF, tmp_path / "nats.conf")
    write(tmp_path / "secrets", Topology(nats_routes=("127.0.0.1:1",)))
    shutil.copy(tmp_path / "secrets" / "nats_secrets.conf", tmp_path / "nats_secrets.conf")
    env, port = _node_env(tmp_path)
    log = tmp_path / "nats.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([nats_server_binary(), "-c", str(tmp_path / "nats.conf")],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_accepting("127.0.0.1", port, proc, log)

        async def attempt(**creds: str) -> str:
            try:
                nc = await nats.connect(f"nats://127.0.0.1:{port}", allow_reconnect=False,
                                        connect_timeout=5, **creds)
            except Exception as exc:
                if "authorization" in str(exc).lower():
                    return "refused"
                raise
            await nc.close()
            return "admitted"

        assert anyio.run(attempt) == "refused"
        assert anyio.run(lambda: attempt(token="ow_" + "0" * 48)) == "refused"  # no callout
        svc = (tmp_path / "secrets" / "ow_nats_url").read_text()
        password = svc.split("svc:", 1)[1].split("@", 1)[0]
        assert anyio.run(lambda: attempt(user="svc", password=password)) == "admitted"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_docs_deploy_explains_every_variable_and_secret() -> None:
    """docs/deploy.md names each variable compose.yaml sets or reads, each secret file,
    and how to turn TLS on."""
    doc = (ROOT / "docs" / "deploy.md").read_text()
    text = (ROOT / "compose.yaml").read_text()
    named = set(re.findall(r"\$\{(\w+)", text))  # read from the operator's shell
    for service in SERVICES.values():
        env = service.get("environment", {})
        named |= {k for k in env if not k.startswith("POSTGRES_")}
    named |= set(COMPOSE["secrets"])
    missing = sorted(v for v in named if f"`{v}`" not in doc and f"`{v}," not in doc)
    assert missing == [], f"docs/deploy.md does not explain {missing}"
    assert "tls {" in doc and "tls://" in doc
