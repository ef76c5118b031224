"""Fixtures of the memory-agent tests: a scene, an in-process agent, query helpers."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
import yaml

from robobus.bus import Bus, BusOptions
from robobus.memory_store.agent import MemoryConfig, run
from robobus.memory_store.commit import CommitOptions
from robobus.schemas.memory import MemoryQuery, QueryReply
from robobus.schemas.topics import Topics

SCENE: dict[str, Any] = {
    "places": {
        "kitchenTable": {"position": [2.0, 1.0]},
        "officeDesk": {"position": [6.0, 5.0]},
        "shelf": {"position": [0.0, 4.0]},
    },
    "objects": {
        "apple": {"kind": "fruit", "at": "kitchenTable", "position": [2.1, 1.2]},
        "banana": {"kind": "fruit", "at": "shelf"},
        "basket": {"kind": "basket", "at": "kitchenTable", "container": True, "capacity": 3},
        "pear": {"kind": "fruit", "at": "basket"},
        "knife": {"kind": "tool", "at": "officeDesk"},
    },
}


@pytest.fixture
def scene_file(tmp_path: Path) -> Path:
    """A scenario-style YAML with a ``scene:`` section."""
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump({"name": "memory-test", "scene": SCENE}))
    return path


@dataclass
class Running:
    """An agent running in this process, plus a client bus on the same broker."""

    agent_bus: Bus
    client: Bus
    topics: Topics
    config: MemoryConfig

    async def query(self, **fields: Any) -> QueryReply:
        msg = await self.client.request(self.topics.memory_query, MemoryQuery(**fields),
                                        timeout=5)
        return msgspec.msgpack.decode(msg.payload, type=QueryReply)

    async def raw_query(self, payload: Any) -> QueryReply:
        msg = await self.client.request(self.topics.memory_query, payload, timeout=5)
        return msgspec.msgpack.decode(msg.payload, type=QueryReply)


@asynccontextmanager
async def running_agent(store: Path, prefix: str, scene: Path | None = None,
                        url: str | None = None) -> AsyncIterator[Running]:
    """Start the memory agent in-process on ``url`` (a fresh memory:// broker by default)."""
    url = url or f"memory://{secrets.token_hex(4)}"
    config = MemoryConfig(store=store, scene=scene, commit=CommitOptions(window_s=0.001))
    opts = BusOptions(prefix=prefix)
    async with Bus.connect(url, name="memory", options=opts) as abus, \
            Bus.connect(url, name="client", options=opts) as client, \
            anyio.create_task_group() as tg:
        await tg.start(run, abus, config)
        yield Running(abus, client, Topics(prefix), config)
        tg.cancel_scope.cancel()


@pytest.fixture
def start_agent() -> Any:
    """``async with start_agent(store, prefix, scene) as run:`` an in-process memory agent."""
    return running_agent
