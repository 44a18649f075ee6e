import asyncio
import threading
import time

import larkway
from larkway import testing


def test_async_overrun_is_retried_and_cancelled():
    cancelled = threading.Event()
    p = larkway.Plugin("slow", "1.0.0")

    @p.on_message
    async def slow(ev):
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return larkway.reply_text("too late")

    t0 = time.monotonic()
    res = testing.run(p, testing.message("x"), deadline=0.2)
    assert (res.outcome, res.error, res.actions) == ("retry", "deadline exceeded", [])
    assert cancelled.is_set()
    assert time.monotonic() - t0 < 2


def test_sync_overrun_does_not_break_the_stream():
    # A thread cannot be interrupted: the result is sent at the deadline, the
    # late return value is dropped, and the other deliveries are unaffected.
    p = larkway.Plugin("slow", "1.0.0")
    finished = threading.Event()

    @p.on_message
    def handler(ev):
        if ev.message.text == "slow":
            time.sleep(0.6)
            finished.set()
            return larkway.reply_text("late")
        return larkway.reply_text("fast " + ev.message.text)

    results = testing.run_many(p, [testing.message("slow"), testing.message("1"), testing.message("2")],
                               deadline=0.3)
    assert (results[0].outcome, results[0].error, results[0].actions) == ("retry", "deadline exceeded", [])
    assert [r.texts for r in results[1:]] == [["fast 1"], ["fast 2"]]
    assert finished.is_set()  # the stream waited for the thread before closing


def test_deadline_is_visible_to_the_handler():
    p = larkway.Plugin("dl", "1.0.0")
    seen = {}

    @p.on_message
    def h(ev):
        seen["left"] = ev.time_left()
        seen["deadline"] = ev.deadline
        return None

    testing.run(p, testing.message("x"), deadline=5)
    assert 3 < seen["left"] <= 5
    assert seen["deadline"].tzinfo is not None
    testing.run(p, testing.message("x"), deadline=None)
    assert seen["left"] is None and seen["deadline"] is None


def test_expired_delivery_is_not_handled():
    p = larkway.Plugin("dl", "1.0.0")
    calls = []
    p.on_message(lambda ev: calls.append(ev))
    res = testing.run(p, testing.message("x"), deadline=-1)
    assert res.outcome == "retry" and "deadline" in res.error
    assert calls == []
