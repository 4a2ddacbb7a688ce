"""Secrets and tokens never appear in plaintext in the event stream, the read models or
the service logs (issue 5): only ciphertext (secrets) and hashes (tokens) are kept."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import nats
import pytest
import structlog

from openweights.adapters.embedded import EmbeddedNats
from openweights.adapters.nats.reader import StoredMessage, read_stream
from openweights.errors import InvalidRequest
from openweights.events import SecretSet, decode
from openweights.secretbox import SecretBox
from tests.tenancy.conftest import A, World, open_world, retry


async def _streams(world: World) -> dict[str, list[StoredMessage]]:
    """Every message of every stream of this world's namespace (events, logs,
    heartbeats, the file store), read raw with the services' credentials."""
    nc = await nats.connect(str(world.settings.nats_url), allow_reconnect=False)
    out: dict[str, list[StoredMessage]] = {}
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            name = info.config.name
            if world.subjects.stream_prefix not in name:
                continue
            out[name] = []

            async def on_batch(batch: list[StoredMessage], into: Any = out[name]) -> None:
                into.extend(batch)

            await read_stream(nc, js, name, on_batch)
        return out
    finally:
        await nc.close()


async def _tables(database_url: str) -> dict[str, list[Any]]:
    conn = await asyncpg.connect(database_url)
    try:
        names = [r["tablename"] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return {n: [dict(r) for r in await conn.fetch(f'SELECT * FROM "{n}"')] for n in names}
    finally:
        await conn.close()


def test_secrets_and_tokens_are_never_stored_or_logged_in_plaintext(
        auth_nats: EmbeddedNats, postgres_url: str, tmp_path: Path,
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    tag = uuid.uuid4().hex
    secrets = {"HF_TOKEN": f"hf_{tag}", "RUNPOD_API_KEY": f"rp_{tag}",
               "OTHER_SECRET": f"other {tag}", "QUOTED": f"q_{tag}"}
    invalid_value = f"never-stored-{tag}"
    with structlog.testing.capture_logs() as logged, \
            open_world(auth_nats, postgres_url, tmp_path) as world:
        a = world.ow("a_admin")
        a.secrets.set(HF_TOKEN=secrets["HF_TOKEN"])
        assert world.cli("a_admin", "env", "set",
                         f"RUNPOD_API_KEY={secrets['RUNPOD_API_KEY']}").exit_code == 0
        env = tmp_path / ".env"
        env.write_text(f"# comment\nMAX_WORKERS=2\nOTHER_SECRET={secrets['OTHER_SECRET']}\n"
                       f"export QUOTED='{secrets['QUOTED']}'\n")
        imported = world.cli("a_admin", "env", "import", str(env))
        assert imported.exit_code == 0, imported.output
        with pytest.raises(InvalidRequest) as bad:
            a.secrets.set(**{"BAD-NAME": invalid_value})
        assert invalid_value not in str(bad.value)
        shown = world.cli("a_admin", "env", "show")
        assert shown.exit_code == 0, shown.output
        assert "MAX_WORKERS=2" in shown.output.splitlines()
        for name, value in secrets.items():
            assert f"{name}={value}" in shown.output.splitlines()
        names = world.cli("a_user", "env", "ls")
        assert names.output.split() == sorted([*secrets, "MAX_WORKERS"])
        assert all(v not in names.output for v in secrets.values())
        # A worker running a job gets them (its job needs them): in a reply, nowhere else.
        job_id = a.jobs.submit(id_prefix="j", script="s", docker_image="i").id
        worker = world.ow(world.worker_token(A, "w1"))
        worker.call(worker.transport.call("agent.register", worker_id="w1", docker_image="i",
                                          hardware_type="cpu"))
        world.start_run(A, job_id, "w1", "run-1")
        given = retry(lambda: worker.call(worker.transport.call("agent.secrets",
                                                                worker_id="w1")), "secrets")
        assert given == {**secrets, "MAX_WORKERS": "2"}
        assert world.cli("a_admin", "env", "rm", "OTHER_SECRET").exit_code == 0
        created = world.cli("a_admin", "token", "create", "--name", "ci").output
        plaintext_tokens = [*world.tokens.values(), created.split()[-1]]
        assert all(t.startswith("ow_") for t in plaintext_tokens)
        streams = anyio.run(_streams, world)
        tables = anyio.run(_tables, str(world.settings.database_url))
        box = SecretBox(world.settings.secret_key)
    server_log = (auth_nats.data_dir / "nats-server.log").read_text()
    printed = capfd.readouterr()
    forbidden = [*secrets.values(), invalid_value, *plaintext_tokens]

    # The event stream: ciphertext only, and it decrypts to what was set.
    assert f"{world.subjects.stream_prefix}_EVENTS" in streams
    stored_secrets: dict[str, str] = {}
    for name, messages in streams.items():
        for m in messages:
            for value in forbidden:
                assert value.encode() not in m.data, f"{value!r} in {name} at {m.seq}"
            if name.endswith("_EVENTS") and ".secret." in m.subject:
                for event in decode(m.data):
                    if isinstance(event, SecretSet):
                        stored_secrets[event.name] = event.ciphertext
    assert {k: box.decrypt(v) for k, v in stored_secrets.items()} == {
        **secrets, "MAX_WORKERS": "2"}
    # The read models: ciphertext in organization_secrets, hashes in api_tokens.
    for table, rows in tables.items():
        for value in forbidden:
            assert value not in repr(rows), f"{value!r} in table {table}"
    rows = {r["name"]: r["ciphertext"] for r in tables["organization_secrets"]}
    assert {k: box.decrypt(v) for k, v in rows.items()} == {
        k: v for k, v in {**secrets, "MAX_WORKERS": "2"}.items() if k != "OTHER_SECRET"}
    assert len(tables["api_tokens"]) >= len(plaintext_tokens)
    # The logs: the services' structlog events, anything printed, nats-server's log.
    assert any(e.get("event") == "api.started" for e in logged)  # the capture worked
    for where, text in (("structlog", repr(logged)), ("stdout", printed.out),
                        ("stderr", printed.err), ("logging", caplog.text),
                        ("nats-server", server_log)):
        for value in forbidden:
            assert value not in text, f"{value!r} in {where} log"


def test_ow_env_set_reads_a_bare_keys_value_from_stdin(world: World) -> None:
    """`ow env set KEY`: the value never is an argument (the process list shows those)."""
    value = f"hf_{uuid.uuid4().hex}"
    piped = world.cli("a_admin", "env", "set", "HF_TOKEN", input=f"{value}\n")
    assert piped.exit_code == 0, piped.output
    assert value not in piped.output
    assert world.ow("a_admin").secrets.show() == {"HF_TOKEN": value}
    empty = world.cli("a_admin", "env", "set", "OTHER", input="")
    assert empty.exit_code == 1 and "no value" in empty.output, empty.output
    two = world.cli("a_admin", "env", "set", "A1", "A2", input="x\n")
    assert two.exit_code == 1 and "one KEY" in two.output, two.output
    helped = world.cli("a_admin", "env", "set", "--help")
    assert "stdin" in helped.output and "prompt" in helped.output
    assert set(world.ow("a_admin").secrets.show()) == {"HF_TOKEN"}


def _read_until(fd: int, wanted: bytes, seen: bytearray) -> None:
    """Read the terminal's output until ``wanted`` shows (or the process ends)."""
    while wanted not in seen:
        ready, _, _ = select.select([fd], [], [], 30)
        assert ready, f"no {wanted!r} on the terminal; it showed {bytes(seen)!r}"
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the process ended: its side of the terminal closed
            return
        if not chunk:
            return
        seen += chunk


def test_ow_env_set_prompts_for_a_bare_keys_value_without_echo(world: World) -> None:
    value = f"rp_{uuid.uuid4().hex}"
    env = {**os.environ, "OW_NATS_URL": world.server.url, "OW_NAMESPACE": world.ns,
           "OW_HOME": str(world.home / "cli"), "OPENWEIGHTS_API_KEY": world.tokens["a_admin"],
           "OW_REQUEST_TIMEOUT_S": "3"}
    controller, terminal = pty.openpty()
    ow = Path(sys.executable).with_name("ow")
    proc = subprocess.Popen([str(ow), "env", "set", "RUNPOD_API_KEY"], stdin=terminal,
                            stdout=terminal, stderr=terminal, env=env, start_new_session=True)
    os.close(terminal)
    seen = bytearray()
    try:
        _read_until(controller, b"RUNPOD_API_KEY", seen)  # the prompt names the key
        os.write(controller, f"{value}\n".encode())
        _read_until(controller, b"set RUNPOD_API_KEY", seen)
        assert proc.wait(timeout=30) == 0, bytes(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(controller)
    assert value.encode() not in seen  # not echoed
    assert world.ow("a_admin").secrets.show() == {"RUNPOD_API_KEY": value}
