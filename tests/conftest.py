"""Shared fixtures: a private Mosquitto, a robobus hub process, and unique topic prefixes."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from robobus import testing


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def mosquitto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Mosquitto started by this test session on a free loopback port."""
    with testing.mosquitto(directory=tmp_path_factory.mktemp("mosquitto")) as url:
        yield url


@pytest.fixture(scope="session")
def hub_url() -> Iterator[str]:
    """A ``robobus hub`` process on free loopback ports."""
    with testing.hub() as url:
        yield url


@pytest.fixture(params=["memory", "zmq", "mqtt"])
def bus_url(request: pytest.FixtureRequest) -> str:
    """Every backend in turn: in-memory, ZeroMQ through a hub process, MQTT via Mosquitto."""
    if request.param == "memory":
        return f"memory://{secrets.token_hex(4)}"
    if request.param == "zmq":
        return request.getfixturevalue("hub_url")
    request.applymarker(pytest.mark.broker)
    return request.getfixturevalue("mosquitto_url")


@pytest.fixture
def prefix() -> str:
    """A topic prefix unique to the test, like aiomqtt's ``unique_topic()``."""
    return f"t{secrets.token_hex(4)}"


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]
