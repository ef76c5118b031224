"""The memory agent: records every bus message and keeps spatial, embodiment and task memory.

* Subscribes to ``#`` (``Overflow.BLOCK``: nothing is dropped; a full buffer pushes back into
  the transport) and queues each message's raw bytes for the group committer.
* Folds registration, alive, state, feedback, task and world-event messages into
  :class:`~memory_store.views.Views`; nothing else is decoded.
* Answers ``P/memory/query`` (``MemoryQuery`` -> ``QueryReply``) and ``P/memory/change``
  (``WorldChange`` -> ``WorldReply``); every accepted change is published on ``P/world/events``.

With ``views=False`` the same agent is ``robobus record``: a recorder for chosen patterns.
"""

from __future__ import annotations

import contextlib
import gc
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import structlog
import yaml
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from robobus.bus import Bus
from robobus.bus.backends.zmq_durable import tap
from robobus.bus.errors import BusError, DecodeError, PayloadTooLarge
from robobus.bus.message import Message
from robobus.bus.presence import Presence
from robobus.bus.subscription import Overflow, Subscription
from robobus.bus.topics import matches
from robobus.memory_store.commit import CommitOptions, GroupCommitter
from robobus.memory_store.errors import MemoryStoreError, QueryError
from robobus.memory_store.ingest import Excluder, Request, ingest, record_leftovers, takes_raw
from robobus.memory_store.no_brain import answer_without_brain
from robobus.memory_store.query import LOG_KINDS, answer, parse, refuse
from robobus.memory_store.segment import pack_key
from robobus.memory_store.store import MemoryStore, StoreOptions, open_store
from robobus.memory_store.views import MAX_FINISHED_IN_RAM, Rejected, Views
from robobus.schemas.codec import decode_as
from robobus.schemas.memory import MemoryQuery, QueryReply
from robobus.schemas.messages import MemoryStatus, now_ns
from robobus.schemas.owners import owned_by, owner
from robobus.schemas.topics import Topics
from robobus.schemas.world import WorldChange, WorldConflict, WorldEvent, WorldReply

log = structlog.get_logger("memory.agent")
_REQUEST_BUFFER = 1000
#: bytes kept free in a reply for what wraps the answer (reply envelope, transport headers)
_REPLY_HEADROOM = 64 * 1024


@dataclass(slots=True)
class MemoryConfig:
    """What ``robobus memory`` (and ``robobus record``) is given."""

    store: Path
    scene: Path | None = None
    store_options: StoreOptions = field(default_factory=StoreOptions)
    commit: CommitOptions = field(default_factory=CommitOptions)
    #: topic filters recorded; empty: the fleet's own topics (``{prefix}/#``), so a memory
    #: agent on a shared broker records its fleet, not every other fleet's retained values
    patterns: tuple[str, ...] = ()
    #: topic filters not recorded even when ``patterns`` match (``robobus record --exclude``)
    exclude: tuple[str, ...] = ()
    views: bool = True
    #: also record memory queries (read-only requests to this agent) in the event log
    record_queries: bool = False
    buffer: int = 100_000
    retention_check_s: float = 60.0
    #: finished tasks kept in RAM (live ones always are); older ones are read from views.mdb
    max_finished_tasks: int = MAX_FINISHED_IN_RAM
    #: the process's first-generation GC threshold while the agent runs (None: left alone);
    #: see :func:`tune_gc`
    gc_threshold: int | None = 10_000


def load_scene(path: Path) -> dict[str, Any]:
    """A scene from a scenario YAML (its ``scene:`` section) or a bare scene YAML."""
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with places and objects")
    scene = data.get("scene", data)
    if not isinstance(scene, dict) or "places" not in scene:
        raise ValueError(f"{path}: no scene (a 'places' mapping) found")
    return scene


def scene_robots(path: Path) -> list[str]:
    """The robot names of a scenario YAML's fleet (none for a bare scene): objects may start
    in their hands (``at: ROBOT``)."""
    data = yaml.safe_load(path.read_text())
    robots = data.get("robots") if isinstance(data, dict) and "scene" in data else None
    if not isinstance(robots, list):
        return []
    return [str(r["name"]) for r in robots if isinstance(r, dict) and "name" in r]


class MemoryAgent:
    """State of one running agent; :func:`run` drives it."""

    def __init__(self, bus: Bus, config: MemoryConfig, store: MemoryStore) -> None:
        self.bus = bus
        self.config = config
        self.store = store
        self.topics = Topics(bus.options.prefix)
        self.views = Views(self.topics, live=True, max_finished=config.max_finished_tasks) \
            if config.views else None
        if self.views is not None:  # bounded task memory: old finished tasks stay on disk
            self.views.archive = store.views_store
        # A query changes nothing: recording it would turn every read into a durable write.
        # (A plain recorder, without views, answers none and records everything.)
        self.unrecorded = (self.topics.memory_query
                           if self.views is not None and not config.record_queries else None)
        self.committer = GroupCommitter(store, self.views, config.commit)
        self.excluded = Excluder(config.exclude) if config.exclude else None
        # Messages whose transport ack (MQTT PUBACK) waits for their commit: a kill -9 then
        # loses nothing the broker considers delivered.
        self.unacked: deque[tuple[int, Message]] = deque()
        self.committer.on_commit = self._ack_committed
        self.committer.on_failure = self._store_refused
        #: request topic -> its handler (filled by ``_start_servers``)
        self.requests: dict[str, Callable[[Request], Awaitable[None]]] = {}
        self._log_queries: MemoryObjectSendStream[tuple[Message, int, MemoryQuery]] | None = None
        self.log = log.bind(agent="memory", store=str(config.store))

    def _ack_committed(self, committed: int) -> None:
        unacked = self.unacked
        while unacked and unacked[0][0] <= committed:
            unacked.popleft()[1].ack()
        if self.views is not None and not self.committer.holding:
            self.views.trim()  # every record not dirty now is durable: this commit succeeded

    # -- start-up ---------------------------------------------------------------------------
    def restore(self) -> int:
        """Load persisted views and fold in the log events they miss (worker thread)."""
        views = self.views
        if views is None:
            return 0
        ts, seq = self.store.views_store.load_into(views)
        views.live = False
        caught_up = 0
        for ev in self.store.scan(after=pack_key(ts, seq) if seq else None):
            views.observe(ev.topic, ev.payload, ev.ts_ns)
            caught_up += 1
        views.live = True
        if self.config.scene is not None and not views.world.places and not views.world.version:
            views.seed(load_scene(self.config.scene), scene_robots(self.config.scene))
        return caught_up

    async def report_bad_records(self) -> None:
        """Report the stored records that failed their checks at start-up (they were skipped)."""
        for bad in self.store.views_store.problems:
            await self.bus.report_error(f"{self.config.store}/views.mdb:{bad.record}",
                                        bad.reason, "bad_record")
        self.store.views_store.problems.clear()

    async def _store_refused(self, exc: MemoryStoreError) -> None:
        code = getattr(exc, "code", "store_error")
        await self.bus.report_error(str(self.config.store), f"{exc}; queries are still answered, "
                                    "writes are retried", code)

    async def publish_effects(self, effects: list[WorldEvent | Rejected]) -> None:
        for eff in effects:
            if isinstance(eff, WorldEvent):
                await self._publish_event(eff)
            elif eff.code != "decode" or owner(eff.topic, self.topics.prefix) == "memory":
                # an input the brain or an edge also decodes is theirs to report (issue 14)
                await self.bus.report_error(eff.topic, eff.reason, eff.code)

    # -- request / reply --------------------------------------------------------------------
    async def on_query(self, request: Request) -> None:
        """Answer a ``MemoryQuery`` from the in-memory views right away (microseconds); queries
        that read the log go to their own task. Malformed ones get ``ok=False`` and a reason."""
        assert self.views is not None and self._log_queries is not None
        msg, seen = request
        if msg.response_topic is None:
            await self.bus.report_error(msg.topic, "query without a response topic",
                                        "no_reply_to", msg.payload)
            return
        try:
            q = parse(msg.payload)
        except QueryError as exc:
            await self.bus.report_error(msg.topic, exc.reason, exc.code, msg.payload)
            await self.bus.reply(msg, refuse(exc))
            return
        if q.kind in LOG_KINDS:
            await self._log_queries.send((msg, seen, q))
        else:
            await self._reply(msg, answer(q, self.views, None))

    async def _reply(self, msg: Message, reply: QueryReply | WorldReply) -> None:
        """Send ``reply`` if it fits the bus's payload limit, else a clear refusal."""
        try:
            await self.bus.reply(msg, reply)
        except PayloadTooLarge as exc:
            hint = ("ask for fewer (limit, status=active, or one by name)"
                    if isinstance(reply, QueryReply) else "the change is too large to echo")
            reason = f"reply of {exc.size} bytes exceeds the {exc.limit}-byte limit: {hint}"
            await self.bus.report_error(msg.topic, reason, "too_large", msg.payload)
            refusal = QueryReply(ok=False, error=reason, code="too_large") \
                if isinstance(reply, QueryReply) else \
                WorldReply(ok=False, reason=reason, code="too_large")
            await self.bus.reply(msg, refusal)

    async def _publish_event(self, event: WorldEvent) -> None:
        try:
            await self.bus.publish(self.topics.world_events, event, qos=1)
        except PayloadTooLarge as exc:  # applied and stored; only its announcement is lost
            await self.bus.report_error(self.topics.world_events, f"world event {event.seq} "
                                        f"of {exc.size} bytes not published", "too_large")

    async def serve_log_queries(
            self, queries: MemoryObjectReceiveStream[tuple[Message, int, MemoryQuery]]) -> None:
        """Answer queries that read the log, in a worker thread, once what they saw is durable."""
        async for msg, seen, q in queries:
            assert self.views is not None  # on_query, the only sender, asserts it too
            try:
                await self.committer.flush_to(seen)
            except MemoryStoreError:  # the store refuses writes: answer from what it holds
                pass
            budget = self.bus.options.max_payload - _REPLY_HEADROOM
            reply = await anyio.to_thread.run_sync(answer, q, self.views, self.store.log, budget)
            await self._reply(msg, reply)

    async def serve_changes(self, requests: MemoryObjectReceiveStream[Request]) -> None:
        """Apply ``WorldChange`` requests through :class:`World`; refuse conflicts clearly."""
        assert self.views is not None
        async for msg, _ in requests:
            reply = await self._change(msg)
            if msg.response_topic is not None:
                await self._reply(msg, reply)

    async def _change(self, msg: Message) -> WorldReply:
        assert self.views is not None
        refused = self._refuse_change(msg)
        if refused is not None:
            await self.bus.report_error(msg.topic, refused.reason or "", refused.code or "",
                                        msg.payload)
            return refused
        try:
            change = decode_as(msg.payload, WorldChange, msg.topic)
            denied = self.views.foreign_change(change, msg.sender) or self.views.late_change(change)
            if denied is not None:
                await self.bus.report_error(msg.topic, denied.reason, denied.code, msg.payload)
                return WorldReply(ok=False, reason=denied.reason, code=denied.code)
            event = self.views.change(change, now_ns())  # a multiple of TICK_NS (issue 14)
        except DecodeError as exc:
            await self.bus.report_error(msg.topic, exc.reason, "malformed", msg.payload)
            return WorldReply(ok=False, reason=exc.reason, code="malformed")
        except WorldConflict as exc:
            await self.bus.report_error(msg.topic, exc.reason, exc.code, msg.payload)
            return WorldReply(ok=False, reason=exc.reason, code=exc.code)
        except (ValueError, TypeError, KeyError) as exc:  # e.g. add_robot with hands="two"
            reason = f"invalid {change.op} change: {exc!r}"
            await self.bus.report_error(msg.topic, reason, "invalid", msg.payload)
            return WorldReply(ok=False, reason=reason, code="invalid")
        await self._publish_event(event)
        try:
            await self.committer.sync()  # the world snapshot is durable before the ack
        except MemoryStoreError as exc:  # held and retried; the world did change
            self.log.error("world_change_not_durable", seq=event.seq, error=str(exc))
        self.log.info("world_change", op=change.op, robot=change.robot, object=change.object,
                      target=change.target, seq=event.seq)
        return WorldReply(ok=True, event=event)

    def _refuse_change(self, msg: Message) -> WorldReply | None:
        """A change that must not be applied now: its event could not be published (too
        large), or the store refuses writes (it would not be durable)."""
        limit = self.bus.options.max_payload - _REPLY_HEADROOM
        if len(msg.payload) > limit:
            return WorldReply(ok=False, code="too_large", reason=f"change of {len(msg.payload)} "
                              f"bytes is over the {limit}-byte limit of a world change")
        failure = self.committer.failure
        if failure is not None:
            return WorldReply(ok=False, code=getattr(failure, "code", "store_error"),
                              reason=f"memory store refuses writes: {failure}")
        return None

    async def retention(self) -> None:
        """Drop whole segments that fell out of the retention window."""
        while True:
            dropped = await anyio.to_thread.run_sync(self.store.apply_retention)
            for path in dropped:
                self.log.info("segment_dropped", path=str(path))
            await anyio.sleep(self.config.retention_check_s)


def memory_presence(prefix: str = "robobus", name: str = "memory") -> Presence:
    """The memory agent's births and deaths on ``P/memory/status`` (``MemoryStatus``)."""
    return Presence(Topics(prefix).memory_status,
                    lambda online, seq, ts: MemoryStatus(name, online, ts_ns=ts, bd_seq=seq))


def tune_gc(threshold: int) -> None:
    """Collect less often: ingest allocates a Message and a record per event and its buffers
    hold up to 100k of them, so with CPython's default thresholds (700, 10, 10) the collector
    rescanned those buffers over and over: a third of the agent's CPU per event when it is
    behind (issue 16, ``bench/memory_ingest_cpu.py``). Nothing on that path makes reference
    cycles. What exists after start-up (modules, restored views) is frozen out of collection
    altogether. The threshold bounds the pause: on the 2-core VM a young collection of 10,000
    objects takes about 1 ms (50,000: about 10 ms, for no more throughput), and the rarer
    pass over the middle generation about 11 ms."""
    gc.freeze()
    gc.set_threshold(threshold, 20, 100)


async def run(bus: Bus, config: MemoryConfig, *,
              task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Run the memory agent on ``bus`` until cancelled."""
    store = await anyio.to_thread.run_sync(lambda: open_store(config.store, **_opts(config)))
    try:
        agent = MemoryAgent(bus, config, store)
        caught_up = await anyio.to_thread.run_sync(agent.restore)
        agent.log.info("memory_open", caught_up=caught_up, last_seq=store.log.last_seq)
        if config.gc_threshold is not None:
            tune_gc(config.gc_threshold)
        await _serve(agent, task_status)
    finally:
        store.close()


def _opts(config: MemoryConfig) -> dict[str, Any]:
    o = config.store_options
    return {"map_size": o.map_size, "segment_ns": o.segment_ns, "views_map_size": o.views_map_size,
            "readahead": o.readahead, "sync": o.sync, "retention_ns": o.retention_ns}


async def _serve(agent: MemoryAgent, task_status: anyio.abc.TaskStatus[None]) -> None:
    cfg, topics, bus = agent.config, agent.topics, agent.bus
    patterns = list(cfg.patterns) or [f"{topics.prefix}/#"]
    subs: list[Subscription] = []
    presence = None
    if agent.views is not None:
        will = bus.options.will
        presence = will if isinstance(will, Presence) else memory_presence(topics.prefix)
    async with contextlib.AsyncExitStack() as stack:
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(agent.committer.run)
                if agent.views is not None:
                    _start_servers(agent, tg, patterns)
                # refusals on its topics are the memory agent's to report, a recorder's never
                owns = owned_by("memory", topics.prefix) if agent.views is not None else False
                for pattern in patterns:
                    sub = await stack.enter_async_context(
                        bus.subscribe(pattern, maxsize=cfg.buffer, overflow=Overflow.BLOCK,
                                      manual_ack=True, reports=owns))
                    subs.append(sub)
                    tg.start_soon(ingest, agent, sub, name=f"memory-ingest {pattern}")
                if len(subs) == 1:  # durable ZeroMQ: whole runs of the stream (memory_store.raw)
                    tap(bus, subs[0], partial(takes_raw, agent))
                if agent.views is not None and agent.views.scene is not None:
                    await bus.publish(topics.scene, agent.views.scene, retain=True, qos=1)
                if cfg.store_options.retention_ns is not None:
                    tg.start_soon(agent.retention, name="memory-retention")
                if agent.views is not None:  # an answer for instructions no brain takes
                    await tg.start(answer_without_brain, bus, topics, name="memory-no-brain")
                agent.log.info("memory_ready", patterns=patterns, views=cfg.views)
                if presence is not None:  # born once it answers; again after every reconnect
                    await tg.start(presence.reassert, bus, name="memory-presence")
                    await presence.publish_birth(bus)
                task_status.started()
                await agent.report_bad_records()
        finally:
            with anyio.CancelScope(shield=True):
                await record_leftovers(agent, subs)
                if presence is not None:
                    await _goodbye(bus, presence)


def _start_servers(agent: MemoryAgent, tg: anyio.abc.TaskGroup, patterns: list[str]) -> None:
    send, receive = anyio.create_memory_object_stream[Request](_REQUEST_BUFFER)
    log_send, log_receive = anyio.create_memory_object_stream[
        tuple[Message, int, MemoryQuery]](_REQUEST_BUFFER)
    agent._log_queries = log_send
    agent.requests = {agent.topics.memory_query: agent.on_query,
                      agent.topics.world_change: send.send}
    tg.start_soon(agent.serve_changes, receive, name="memory-changes")
    tg.start_soon(agent.serve_log_queries, log_receive, name="memory-log-queries")
    for topic in agent.requests:
        if not any(matches(p, topic) for p in patterns):
            patterns.append(topic)


async def _goodbye(bus: Bus, presence: Presence) -> None:
    """A clean stop says ``offline`` (retained); if the bus is gone, the last will says it."""
    with anyio.move_on_after(2.0):
        try:
            await presence.publish_death(bus)
        except BusError as exc:
            log.warning("goodbye_failed", error=str(exc))
