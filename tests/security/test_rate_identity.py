"""The brain's instruction rate limit counts the account the broker authenticated, not a name
the client writes (issue 13): on a secured Mosquitto each operator instructs on its own
``P/instructions/{account}``, which the ACL grants to that account only, and the brain keys
its limit on that level. The MQTT ``sender`` user property is whatever the publisher writes: a
fresh one per message used to bypass the quota, and forging another's drained that one's."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from robobus import testing
from robobus.bus import Bus, Subscription
from robobus.bus.policy import instructions_topic
from robobus.schemas.messages import ErrorReport, Instruction, TaskStatus
from robobus.secure import SecureConfig, secure_init

pytestmark = [pytest.mark.anyio, pytest.mark.broker]
P = "robobus"
RATE, BURST = 4, 10  # robobus brain --instruction-rate 4: bursts of 2.5 s of them
FLOOD = 60



@pytest.fixture(scope="module")
def secure_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("rate-identity")
    secure_init(SecureConfig(directory, robots=["r1"], operators=["operator", "op2"],
                             port=testing.free_port()))
    return directory


@contextlib.contextmanager
def _broker(secure_dir: Path) -> Iterator[str]:
    with testing.secured_mosquitto(secure_dir) as url:
        yield url


@contextlib.asynccontextmanager
async def _as(monkeypatch: pytest.MonkeyPatch, secure_dir: Path, url: str, account: str,
              name: str) -> AsyncIterator[Bus]:
    for key, value in testing.account_env(secure_dir, account).items():
        monkeypatch.setenv(key, value)
    async with Bus.connect(url, name=name) as bus:
        yield bus


async def _until_accepted(bus: Bus, statuses: Subscription, tid: str) -> None:
    """Instruct until the brain (starting) accepts: its subscriptions are then live."""
    with anyio.fail_after(30):
        while True:
            await bus.publish(f"{P}/instructions/{bus.name}", Instruction("dance", task_id=tid),
                              qos=1)
            with anyio.move_on_after(0.5):
                while (await statuses.get()).data.task_id != tid:
                    pass
                return


async def test_the_quota_is_the_accounts_not_the_senders_name(
        secure_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One operator floods with a fresh sender name per message, every other one forging
    op2's: its account is held to its quota, each refusal gets exactly one report naming the
    account, and op2's instructions sent in the middle of the flood are all taken."""
    with _broker(secure_dir) as url, contextlib.ExitStack() as stack:
        argv = testing.robobus_cmd("brain", "--bus", url, "--prefix", P,
                                   "--instruction-rate", str(RATE))
        stack.enter_context(testing.spawn(argv, name="brain", env=testing.account_env(secure_dir, "brain"),
                                          log_dir=tmp_path / "logs"))
        async with _as(monkeypatch, secure_dir, url, "memory", "watcher") as watcher, \
                watcher.subscribe(f"{P}/tasks/+", TaskStatus) as statuses, \
                watcher.subscribe(f"{P}/errors", ErrorReport) as errors, \
                _as(monkeypatch, secure_dir, url, "op2", "op2") as op2, \
                _as(monkeypatch, secure_dir, url, "operator", "operator") as op:
            assert instructions_topic(url, P) == f"{P}/instructions/operator"  # its env now
            await _until_accepted(op2, statuses, "probe")
            start = anyio.current_time()
            for i in range(FLOOD):
                op.name = "op2" if i % 2 else f"fresh-{i}"  # the sender property it writes
                await op.publish(f"{P}/instructions/operator",
                                 Instruction("dance", task_id=f"f{i}"), qos=1)
                if i == FLOOD // 2:
                    for j in range(3):
                        await op2.publish(f"{P}/instructions/op2",
                                          Instruction("dance", task_id=f"o{j}"), qos=1)
            elapsed = anyio.current_time() - start
            taken, told, reports = set(), 0, []
            with anyio.fail_after(20):
                while len({t for t in taken if t.startswith("f")}) + told < FLOOD \
                        or not {"o0", "o1", "o2"} <= taken:
                    with anyio.move_on_after(0.05):
                        msg = await statuses.get()
                        taken.add(msg.data.task_id)
                    while (report := errors.get_nowait()) is not None:
                        reports.append(report.data)
                        told += _refusals(report.data)
            with anyio.move_on_after(1.5):  # nothing more: exactly one report per refusal
                while True:
                    report = (await errors.get()).data
                    reports.append(report)
                    told += _refusals(report)
    flood_taken = len({t for t in taken if t.startswith("f")})
    assert flood_taken + told == FLOOD, (flood_taken, told, reports[:3])
    assert flood_taken <= BURST + RATE * elapsed + 2, (flood_taken, elapsed)
    limited = [r for r in reports if r.code in ("rate_limited", "suppressed")]
    assert limited and {(r.topic, r.sender) for r in limited if r.code == "rate_limited"} == {
        (f"{P}/instructions/operator", "operator")}, limited[:3]
    assert all("account 'operator' exceeds" in r.reason for r in limited
               if r.code == "rate_limited")
    assert {"o0", "o1", "o2"} <= taken, "op2's instructions were blocked by operator's flood"
    assert not [r for r in limited if "op2" in f"{r.sender} {r.topic}"], limited


def _refusals(report: ErrorReport) -> int:
    """How many rate-limit refusals a report accounts for (itself, and any it says were not
    reported one by one: the brain's reports are limited per topic, never hidden)."""
    if report.topic != f"{P}/instructions/operator":
        return 0
    untold = re.search(r"(\d+) (earlier )?reports on this topic suppressed", report.reason)
    return (report.code == "rate_limited") + (int(untold[1]) if untold else 0)
