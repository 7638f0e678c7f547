"""A run without PREFECT_API_URL waits long enough for Prefect's temporary server on a busy machine."""

from __future__ import annotations

import pytest
from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

from flows.runtime import TEMPORARY_SERVER_WAIT_S, temporary_server_patience
from pokevq.errors import PokevqError


def test_the_wait_is_longer_than_prefects_and_the_users_own_setting_wins(monkeypatch):
    monkeypatch.delenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", raising=False)
    before = PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()
    with temporary_server_patience():
        assert PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value() == TEMPORARY_SERVER_WAIT_S > before
    assert PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value() == before

    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "7")
    with pytest.raises(PokevqError, match="within 7 s"):
        with temporary_server_patience():
            raise RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server.")


def test_other_runtime_errors_pass_through(monkeypatch):
    with pytest.raises(RuntimeError, match="something else"):
        with temporary_server_patience():
            raise RuntimeError("something else")
