"""The SMTP server wakes the worker once per message when quiet, and coalesces under load."""

from __future__ import annotations

import asyncio

from conversations.inbound.smtp import RoutingWakeup


def run_wakeups(arrivals: int, *, fail_first: bool = False) -> int:
    calls = []

    async def scenario() -> None:
        async def enqueue(func):
            calls.append(func)
            await asyncio.sleep(0.01)
            if fail_first and len(calls) == 1:
                raise RuntimeError("broker down")

        wakeup = RoutingWakeup(enqueue)

        async def arrive():
            try:
                await wakeup.request()
            except RuntimeError:
                pass

        await asyncio.gather(*(arrive() for _ in range(arrivals)))
        await wakeup.settle()

    asyncio.run(scenario())
    return len(calls)


def test_a_quiet_server_wakes_the_worker_once_per_message():
    assert run_wakeups(1) == 1


def test_messages_arriving_during_a_wakeup_share_one_follow_up():
    assert run_wakeups(20) == 2


def test_a_failed_wakeup_still_gets_its_follow_up():
    assert run_wakeups(5, fail_first=True) == 2
