"""Fixtures for the Python SDK suite: a live `cog serve` on loopback.

`scripts/test-sdks` starts the server (file store, then Redis store) and
passes where it listens and two admin tokens in the environment.
"""

import os
import uuid

import pytest
from cog_admin import AuthenticatedClient, Client


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.exit(f"{name} is not set: run this suite through scripts/test-sdks", returncode=2)
    return value


@pytest.fixture(scope="session")
def base_url() -> str:
    return _env("COG_URL")


@pytest.fixture()
def admin(base_url: str) -> AuthenticatedClient:
    """A write-scoped client; statuses the description does not list raise."""
    return AuthenticatedClient(base_url=base_url, token=_env("COG_WRITE_TOKEN"), raise_on_unexpected_status=True)


@pytest.fixture()
def reader(base_url: str) -> AuthenticatedClient:
    return AuthenticatedClient(base_url=base_url, token=_env("COG_READ_TOKEN"), raise_on_unexpected_status=True)


@pytest.fixture()
def anonymous(base_url: str) -> AuthenticatedClient:
    return AuthenticatedClient(base_url=base_url, token="cogadm_not_a_token", raise_on_unexpected_status=True)


@pytest.fixture()
def unauthenticated(base_url: str) -> Client:
    return Client(base_url=base_url, raise_on_unexpected_status=True)


@pytest.fixture()
def uid() -> str:
    """A suffix that keeps each test's plans and tenants apart."""
    return uuid.uuid4().hex[:10]
