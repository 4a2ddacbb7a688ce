"""A cluster's OW_NATS_URL (comma-separated, credentials on one server) as nats-py takes it."""

from __future__ import annotations

import pytest

from openweights.adapters.nats.servers import connect_options, first_url, servers


def test_a_cluster_url_is_split_and_its_credentials_go_to_every_server() -> None:
    url = "nats://svc:p%40ss@nats-1:4222, nats://nats-2:4222,nats-3"
    assert connect_options(url) == {
        "servers": ["nats://nats-1:4222", "nats://nats-2:4222", "nats://nats-3"],
        "user": "svc", "password": "p@ss"}


def test_a_user_without_password_is_a_token_and_tls_stays_tls() -> None:
    assert connect_options("tls://ow_abc@h:1") == {"servers": ["tls://h:1"], "token": "ow_abc"}


def test_first_url_carries_the_credentials_for_one_server_readers() -> None:
    assert first_url("nats://a:1,nats://svc:p%40ss@b:2") == "nats://svc:p%40ss@a:1"
    assert first_url("nats://a:1") == "nats://a:1"


def test_an_empty_url_names_the_problem() -> None:
    with pytest.raises(ValueError, match="no NATS server"):
        servers(" , ")
