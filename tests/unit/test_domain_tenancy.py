"""Organizations, API tokens, secrets and files: given events, when a command, then events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from openweights.domain import file, org, secret, token
from openweights.domain.commands import (
    CreateFile,
    CreateOrganization,
    CreateToken,
    RemoveSecret,
    RevokeToken,
    SetSecret,
)
from openweights.domain.secret import SecretState
from openweights.domain.token import TokenState
from openweights.errors import IllegalTransition
from openweights.events import (
    Actor,
    FileCreated,
    OrganizationCreated,
    SecretRemoved,
    SecretSet,
    TokenCreated,
    TokenRevoked,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
OPERATOR, ADMIN = Actor("operator", "alice"), Actor("client", "tok-admin")


# -- organizations -------------------------------------------------------------------------
def test_creating_an_organization() -> None:
    [event] = org.decide(None, CreateOrganization(org="org-a", name="Lab A"), NOW, OPERATOR)
    assert event == OrganizationCreated(at=NOW, by=OPERATOR, org="org-a", name="Lab A")
    assert org.evolve(None, event) == org.OrgState(id="org-a", name="Lab A", created_at=NOW,
                                                   updated_at=NOW)


def test_creating_the_same_organization_again_changes_nothing() -> None:
    state = org.evolve(None, OrganizationCreated(at=T0, by=OPERATOR, org="org-a", name="Lab A"))
    assert org.decide(state, CreateOrganization(org="org-a", name="Lab A"), NOW, OPERATOR) == []


def test_an_organization_is_not_renamed_by_creating_it() -> None:
    state = org.evolve(None, OrganizationCreated(at=T0, by=OPERATOR, org="org-a", name="Lab A"))
    with pytest.raises(IllegalTransition,
                       match="organization in state 'exists' cannot accept CreateOrganization"):
        org.decide(state, CreateOrganization(org="org-a", name="Lab B"), NOW, OPERATOR)


def test_an_organization_is_created_once() -> None:
    event = OrganizationCreated(at=T0, by=OPERATOR, org="org-a", name="Lab A")
    with pytest.raises(IllegalTransition, match=r"'exists' cannot accept org\.created/1"):
        org.evolve(org.evolve(None, event), event)


# -- tokens --------------------------------------------------------------------------------
HASH = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
CREATE_TOKEN: dict[str, Any] = {
    "org": "org-a", "token_id": "tok-1", "name": "laptop", "role": "user", "token_hash": HASH,
    "token_prefix": "ow_9f86", "expires_at": NOW + timedelta(days=30), "worker_id": None}


def active_token() -> TokenState:
    return token.evolve(None, TokenCreated(at=T0, by=ADMIN, **CREATE_TOKEN))


def test_creating_a_token_records_only_its_hash() -> None:
    [event] = token.decide(None, CreateToken(**CREATE_TOKEN), NOW, ADMIN)
    assert event == TokenCreated(at=NOW, by=ADMIN, **CREATE_TOKEN)
    assert token.evolve(None, event) == TokenState(
        id="tok-1", org="org-a", name="laptop", role="user", token_hash=HASH,
        token_prefix="ow_9f86", created_at=NOW, expires_at=NOW + timedelta(days=30))


def test_a_worker_token_names_its_worker() -> None:
    cmd = CreateToken(**{**CREATE_TOKEN, "role": "worker", "worker_id": "w1", "expires_at": None})
    [event] = token.decide(None, cmd, NOW, Actor("provisioner"))
    assert token.evolve(None, event).worker_id == "w1"


def test_revoking_an_active_token() -> None:
    state = active_token()
    [event] = token.decide(state, RevokeToken(), NOW, ADMIN)
    assert event == TokenRevoked(at=NOW, by=ADMIN, org="org-a", token_id="tok-1")
    after = token.evolve(state, event)
    assert (after.status, after.revoked_at) == ("revoked", NOW)


def revoked_token() -> TokenState:
    return token.evolve(active_token(), TokenRevoked(at=T0, by=ADMIN, org="org-a",
                                                      token_id="tok-1"))


def test_revoking_a_revoked_token_changes_nothing() -> None:
    assert token.decide(revoked_token(), RevokeToken(), NOW, ADMIN) == []


@pytest.mark.parametrize(
    ("state", "cmd", "state_name"),
    [
        (None, RevokeToken(), "absent"),
        (active_token(), CreateToken(**CREATE_TOKEN), "active"),
        (revoked_token(), CreateToken(**CREATE_TOKEN), "revoked"),
    ],
    ids=["revoke-absent", "create-active", "create-revoked"],
)
def test_refused_token_commands_name_state_and_command(
    state: TokenState | None, cmd: Any, state_name: str
) -> None:
    with pytest.raises(IllegalTransition,
                       match=f"token in state '{state_name}' cannot accept {type(cmd).__name__}"):
        token.decide(state, cmd, NOW, ADMIN)


def test_a_token_is_revoked_once() -> None:
    revoked = TokenRevoked(at=T0, by=ADMIN, org="org-a", token_id="tok-1")
    with pytest.raises(IllegalTransition, match=r"'revoked' cannot accept token\.revoked/1"):
        token.evolve(token.evolve(active_token(), revoked), revoked)
    with pytest.raises(IllegalTransition, match=r"'absent' cannot accept token\.revoked/1"):
        token.evolve(None, revoked)


def test_a_token_is_usable_while_active_and_unexpired() -> None:
    state = active_token()
    assert state.usable(NOW)
    assert not state.usable(NOW + timedelta(days=30))  # expires_at itself is too late
    revoked = token.evolve(state, TokenRevoked(at=NOW, by=ADMIN, org="org-a", token_id="tok-1"))
    assert not revoked.usable(NOW)


# -- secrets -------------------------------------------------------------------------------
def secret_set(ciphertext: str = "ct-1", at: datetime = T0) -> SecretSet:
    return SecretSet(at=at, by=ADMIN, org="org-a", name="HF_TOKEN", ciphertext=ciphertext)


def given_secret(*events: Any) -> SecretState | None:
    state: SecretState | None = None
    for event in events:
        state = secret.evolve(state, event)
    return state


REMOVED = SecretRemoved(at=T0, by=ADMIN, org="org-a", name="HF_TOKEN")
SET = SetSecret(org="org-a", name="HF_TOKEN", ciphertext="ct-2")


@pytest.mark.parametrize("history", [[], [secret_set()], [secret_set(), REMOVED]],
                         ids=["absent", "set", "removed"])
def test_setting_a_secret_always_records_the_new_ciphertext(history: list[Any]) -> None:
    assert secret.decide(given_secret(*history), SET, NOW, ADMIN) == [
        SecretSet(at=NOW, by=ADMIN, org="org-a", name="HF_TOKEN", ciphertext="ct-2")]


def test_overwriting_a_secret_keeps_its_creation_time() -> None:
    state = given_secret(secret_set("ct-1", T0), secret_set("ct-2", NOW))
    assert state == SecretState(org="org-a", name="HF_TOKEN", ciphertext="ct-2",
                                created_at=T0, updated_at=NOW)


def test_removing_a_secret_forgets_its_ciphertext() -> None:
    state = given_secret(secret_set())
    [event] = secret.decide(state, RemoveSecret(), NOW, ADMIN)
    assert event == SecretRemoved(at=NOW, by=ADMIN, org="org-a", name="HF_TOKEN")
    after = secret.evolve(state, event)
    assert (after.status, after.ciphertext, after.updated_at) == ("removed", "", NOW)


def test_a_secret_set_again_after_removal_is_new() -> None:
    state = given_secret(secret_set("ct-1", T0), REMOVED, secret_set("ct-3", NOW))
    assert state == SecretState(org="org-a", name="HF_TOKEN", ciphertext="ct-3",
                                created_at=NOW, updated_at=NOW)


@pytest.mark.parametrize("history", [[], [secret_set(), REMOVED]], ids=["absent", "removed"])
def test_removing_a_missing_secret_is_refused(history: list[Any]) -> None:
    with pytest.raises(IllegalTransition,
                       match="secret in state 'absent' cannot accept RemoveSecret"):
        secret.decide(given_secret(*history), RemoveSecret(), NOW, ADMIN)


@pytest.mark.parametrize("history", [[], [secret_set(), REMOVED]], ids=["absent", "removed"])
def test_evolve_refuses_removing_a_missing_secret(history: list[Any]) -> None:
    with pytest.raises(IllegalTransition, match=r"cannot accept secret\.removed/1"):
        given_secret(*history, REMOVED)


# -- files ---------------------------------------------------------------------------------
CREATE_FILE: dict[str, Any] = {
    "org": "org-a", "file_id": "file-5a1f0c9e2b7d", "filename": "train.jsonl",
    "purpose": "conversations", "bytes": 1834, "sha256": "5a1f0c9e2b7d" + "0" * 52}


def test_creating_a_file() -> None:
    [event] = file.decide(None, CreateFile(**CREATE_FILE), NOW, ADMIN)
    assert event == FileCreated(at=NOW, by=ADMIN, **CREATE_FILE)
    assert file.evolve(None, event) == file.FileState(
        id="file-5a1f0c9e2b7d", org="org-a", filename="train.jsonl", purpose="conversations",
        bytes=1834, sha256=CREATE_FILE["sha256"], created_at=NOW)


def test_uploading_the_same_file_again_changes_nothing() -> None:
    state = file.evolve(None, FileCreated(at=T0, by=ADMIN, **CREATE_FILE))
    assert file.decide(state, CreateFile(**CREATE_FILE), NOW, ADMIN) == []


def test_a_file_is_created_once() -> None:
    event = FileCreated(at=T0, by=ADMIN, **CREATE_FILE)
    with pytest.raises(IllegalTransition, match=r"'exists' cannot accept file\.created/1"):
        file.evolve(file.evolve(None, event), event)
