"""The Handle stream body: deliveries in, results out.

Per delivery the work is kept small because a Python plugin is CPU-bound long
before the core is: no task for a sync handler (it goes straight to a worker
thread), one task for an async one, one heap entry for the deadline, and results
leave in ResultBatch messages holding whatever is ready when the sender runs.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import heapq
import itertools
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ._event import event_from_proto
from ._gen import plugin_pb2 as pb
from ._state import _deadline

if TYPE_CHECKING:
    from ._event import Event
    from ._plugin import Plugin

#: A ResultBatch is cut at about this size; the core's receive limit is 16 MiB.
BATCH_BYTES = 4 << 20

_RETRY, _DONE, _FAILED = pb.OUTCOME_RETRY, pb.OUTCOME_DONE, pb.OUTCOME_FAILED
_Result, _Response, _Batch = pb.Result, pb.HandleResponse, pb.ResultBatch


class Pool:
    """Worker threads for sync handlers, at most ``size``, started as needed.

    Cheaper than a ThreadPoolExecutor per call (no Future, no wrapper): jobs
    are plain callables that report their own result. An idle worker is woken
    only if no other woken worker is about to take a job, and a worker that
    takes a job wakes the next one while jobs remain, so a burst of quick
    handlers is run by one or two warm threads instead of waking one thread
    per job, while slow (blocking) handlers still get up to ``size`` threads.
    """

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._mu = threading.Lock()
        self._jobs: collections.deque[Callable[[], None]] = collections.deque()
        self._parked: list[Any] = []  # the park locks of idle workers, most recent last
        self._threads = 0
        self._waking = False  # a worker was woken or started and has not taken a job yet

    def submit(self, job: Callable[[], None]) -> None:
        with self._mu:
            self._jobs.append(job)
            wake = None if self._waking else self._wake_locked()
        if wake is not None:
            wake()

    def _wake_locked(self) -> Callable[[], None] | None:
        if self._parked:
            self._waking = True
            return self._parked.pop().release  # the warmest thread first
        if self._threads < self._size:
            self._waking = True
            self._threads += 1
            # Daemon: a handler stuck past shutdown must not keep the process up.
            return threading.Thread(target=self._work, name=f"{self._name}_{self._threads - 1}", daemon=True).start
        return None

    def _work(self) -> None:
        park = threading.Lock()
        park.acquire()
        woken = True
        while True:
            wake = None
            with self._mu:
                if woken:
                    self._waking = woken = False
                if self._jobs:
                    job: Callable[[], None] | None = self._jobs.popleft()
                    if self._jobs and not self._waking:
                        wake = self._wake_locked()
                else:
                    job = None
                    self._parked.append(park)
            if job is None:
                park.acquire()
                woken = True
                continue
            if wake is not None:
                wake()
            try:
                job()
            except BaseException:  # noqa: BLE001 - jobs report their own errors
                pass
            del job


class _Slot:
    """One delivery in flight."""

    __slots__ = ("id", "ev", "answered", "late", "task", "cancelled", "left")

    def __init__(self, did: str, ev: Event, left: float | None) -> None:
        self.id = did
        self.ev = ev
        self.left = left
        self.answered = False  # a result was sent (or queued) for it
        self.late = False  # answered at the deadline while the handler still ran
        self.task: asyncio.Task[Any] | None = None
        self.cancelled = False  # its task was cancelled by the SDK (deadline, shutdown)


class _Await:
    """A sync handler's awaitable return value, to be awaited on the loop."""

    __slots__ = ("aw",)

    def __init__(self, aw: Any) -> None:
        self.aw = aw


class Stream:
    """One Handle stream. ``run`` returns when the core has closed its side
    and every started delivery has ended, or when the stream breaks."""

    def __init__(self, plugin: Plugin, send: Callable[[pb.HandleResponse], Awaitable[None]],
                 result_batches: bool) -> None:
        self.p = plugin
        self.log = plugin.log
        self.loop = asyncio.get_running_loop()
        self.send = send
        self.batches = result_batches
        self.limit = plugin._limit
        self.slots: set[_Slot] = set()
        self.out: list[pb.Result] = []
        self.wake: asyncio.Future[None] | None = None  # the idle sender waits on it
        self.free: asyncio.Future[None] | None = None  # the reader waits on it at max_in_flight
        self.idle: list[asyncio.Future[None]] = []  # waiting for no delivery in flight
        self.closing = False
        self.broken = False
        self.done: collections.deque[tuple[_Slot, Any, bool]] = collections.deque()  # from worker threads
        self.posted = False
        self.sending = False
        self.flush_waiters: list[asyncio.Future[None]] = []
        # Deadlines: a heap of (loop time, seq, slot) under one loop timer for
        # the earliest; a TimerHandle per delivery (heap of Python objects
        # compared in Python) cost more than the rest of the bookkeeping.
        # Ended slots are dropped lazily, and the heap is rebuilt when they
        # outnumber the live ones so it stays small.
        self.deadlines: list[tuple[float, int, _Slot]] = []
        self.seq = itertools.count()
        self.dl_timer: asyncio.TimerHandle | None = None
        self.dl_at = 0.0

    # ---- reading ------------------------------------------------------

    async def run(self, requests: AsyncIterator[pb.HandleRequest]) -> None:
        sender = self.loop.create_task(self._sender())
        ended = False
        self.p._streams.add(self)
        try:
            async for req in requests:
                kind = req.WhichOneof("kind")
                if kind == "deliveries":
                    for d in req.deliveries.deliveries:
                        if len(self.slots) >= self.limit and not self.p._draining:
                            await self._wait_free()
                        self._start(d)
                elif kind == "delivery":
                    if len(self.slots) >= self.limit and not self.p._draining:
                        await self._wait_free()
                    self._start(req.delivery)
                elif kind == "result_ack":
                    self._ack(req.result_ack)
                else:
                    self.log.debug("ignoring an unknown message from the core")
            # The core closed its side: finish what was started.
            await self.wait_idle()
            ended = True
        finally:
            self.p._streams.discard(self)
            if self.dl_timer is not None and not self.slots:
                self.dl_timer.cancel()
                self.dl_timer = None
            if not ended:
                # Shutting down or the stream broke: answer now so the core
                # retries at once rather than at the deadline.
                self.abort("plugin is shutting down")
            self.closing = True
            self._kick()
            try:
                await asyncio.shield(sender)
            except asyncio.CancelledError:
                sender.cancel()
                raise

    async def _wait_free(self) -> None:
        while len(self.slots) >= self.limit and not self.p._draining:
            self.free = self.loop.create_future()
            await self.free

    def _kick_reader(self) -> None:
        f = self.free
        if f is not None and not f.done():
            f.set_result(None)

    async def wait_idle(self) -> None:
        while self.slots:
            f = self.loop.create_future()
            self.idle.append(f)
            await f

    def _ack(self, ack: pb.ResultAck) -> None:
        # The core acks a result only when it refused some of its actions,
        # after running them: logged, never waited for.
        if ack.refused:
            self.log.warn("core refused actions", delivery_id=ack.delivery_id, refused=len(ack.refused),
                          reasons=[f"#{r.index}: {r.reason}" for r in ack.refused])
        else:
            self.log.debug("result acknowledged", delivery_id=ack.delivery_id)

    def _start(self, d: pb.Delivery) -> None:
        did = d.delivery_id
        if not did or not d.HasField("event"):
            self._emit(_Result(delivery_id=did, outcome=_FAILED, error="malformed delivery: missing id or event"))
            return
        if self.p._draining:
            self._emit(_Result(delivery_id=did, outcome=_RETRY, error="plugin is shutting down"))
            return
        try:
            ev = event_from_proto(d)
            left = ev.time_left()
            if left is not None and left <= 0:
                self.log.warn("delivery arrived after its deadline; not handled", delivery_id=did, event_id=ev.id)
                self._emit(_Result(delivery_id=did, outcome=_RETRY,
                                   error="deadline exceeded before the handler started"))
                return
            route = self.p._pick(ev)
            if route is None:
                # Delivered but nothing handles it (e.g. an unknown command
                # while only commands are registered): done, no actions.
                self._emit(_Result(delivery_id=did, outcome=_DONE))
                return
            fn, args, card, is_async = route
            slot = _Slot(did, ev, left)
            if is_async:
                slot.task = self.loop.create_task(self._run_async(slot, fn, args, card))
            else:
                ctx = contextvars.copy_context()
                self.p._workers().submit(lambda: ctx.run(self._run_sync, slot, fn, args, card))
            self.slots.add(slot)
            if left is not None:
                self._watch(slot, left)
        except Exception as e:  # noqa: BLE001 - never take the stream down
            self.log.log(40, "internal error handling a delivery", exc=e, delivery_id=did)
            self._emit(_Result(delivery_id=did, outcome=_RETRY, error=f"sdk error: {e}"))

    # ---- running handlers -----------------------------------------------

    def _run_sync(self, slot: _Slot, fn: Callable[..., Any], args: tuple[Any, ...], card: bool) -> None:
        # On a worker thread, in a copy of the reader's context: state calls
        # the handler makes are bounded by the delivery's deadline.
        _deadline.set(slot.ev.deadline)
        try:
            try:
                v = fn(*args)
            except BaseException as e:  # noqa: BLE001 - a handler bug must not end the process
                res: Any = self.p._failure(e, slot.ev)
            else:
                res = _Await(v) if _isawaitable(v) else self.p._outcome(v, card, slot.ev)
        except BaseException as e:  # noqa: BLE001 - the slot must always be released
            res = self._internal(e, slot)
        self._post(slot, res, card)

    def _post(self, slot: _Slot, res: Any, card: bool) -> None:
        # Hand a result to the loop, waking it once for all that arrive
        # before it runs (so they also leave in one batch).
        self.done.append((slot, res, card))
        if not self.posted:
            self.posted = True
            try:
                self.loop.call_soon_threadsafe(self._take_done)
            except RuntimeError:  # the loop is closed: the stream is long gone
                pass

    def _take_done(self) -> None:
        self.posted = False
        done = self.done
        while done:
            slot, res, card = done.popleft()
            if isinstance(res, _Await):
                if slot.answered:
                    # Overran or shut down while the sync part ran: what it
                    # returned is not started (as a cancelled delivery's).
                    if hasattr(res.aw, "close"):
                        res.aw.close()
                    self._complete(slot, None)
                else:
                    slot.task = self.loop.create_task(self._run_async(slot, _identity, (res.aw,), card))
            else:
                self._complete(slot, res)

    async def _run_async(self, slot: _Slot, fn: Callable[..., Any], args: tuple[Any, ...], card: bool) -> None:
        _deadline.set(slot.ev.deadline)  # this task's own context
        try:
            try:
                v = await fn(*args)
            except asyncio.CancelledError as e:
                if slot.cancelled:
                    self._complete(slot, None)
                    raise
                # Nobody cancelled this delivery: the handler itself raised
                # CancelledError (e.g. from work it awaited). A handler error.
                res = self.p._failure(e, slot.ev)
            except BaseException as e:  # noqa: BLE001 - a handler bug must not end the process
                res = self.p._failure(e, slot.ev)
            else:
                res = self.p._outcome(v, card, slot.ev)
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # noqa: BLE001 - the slot must always be released
            res = self._internal(e, slot)
        self._complete(slot, res)

    def _internal(self, e: BaseException, slot: _Slot) -> pb.Result:
        self.log.log(40, "internal error handling a delivery", exc=e, delivery_id=slot.id)
        return _Result(outcome=_RETRY, error=f"sdk error: {e}")

    def _watch(self, slot: _Slot, left: float) -> None:
        at = self.loop.time() + left
        h = self.deadlines
        if len(h) > 2 * len(self.slots) + 64:
            h[:] = [e for e in h if not e[2].answered]
            heapq.heapify(h)
        heapq.heappush(h, (at, next(self.seq), slot))
        if self.dl_timer is None or at < self.dl_at:
            self._arm(at)

    def _arm(self, at: float) -> None:
        if self.dl_timer is not None:
            self.dl_timer.cancel()
        self.dl_at = at
        self.dl_timer = self.loop.call_at(at, self._expire_due)

    def _expire_due(self) -> None:
        self.dl_timer = None
        h = self.deadlines
        now = self.loop.time()
        while h and (h[0][0] <= now or h[0][2].answered):
            _, _, slot = heapq.heappop(h)
            self._expire(slot)
        if h:
            self._arm(h[0][0])

    def _expire(self, slot: _Slot) -> None:
        if slot.answered:
            return
        slot.answered = slot.late = True
        self.log.warn("handler overran its deadline; the core retries the event", delivery_id=slot.id,
                      event_id=slot.ev.id, deadline_s=round(slot.left or 0, 3))
        self._emit(_Result(delivery_id=slot.id, outcome=_RETRY, error="deadline exceeded"))
        # A coroutine is cancelled; a thread cannot be, so it keeps its
        # in-flight slot until it really returns.
        if slot.task is not None:
            slot.cancelled = True
            slot.task.cancel()

    def _complete(self, slot: _Slot, res: pb.Result | None) -> None:
        """The handler's work has ended (res None: cancelled by the SDK)."""
        if not slot.answered:
            if res is None:  # pragma: no cover - the SDK answers before it cancels
                res = _Result(outcome=_RETRY, error="plugin is shutting down")
            slot.answered = True
            res.delivery_id = slot.id
            self._emit(res)
        elif slot.late:
            if res is None:
                self.log.debug("late handler cancelled", delivery_id=slot.id)
            else:
                self.log.warn("late handler finished; its result was dropped", delivery_id=slot.id)
        self.slots.discard(slot)
        self._kick_reader()
        if not self.slots and self.idle:
            for f in self.idle:
                if not f.done():
                    f.set_result(None)
            self.idle.clear()

    def abort(self, reason: str) -> int:
        """Answer every unanswered delivery with RETRY and cancel the async
        ones; returns how many were answered."""
        n = 0
        for slot in list(self.slots):
            if not slot.answered:
                slot.answered = True
                n += 1
                self._emit(_Result(delivery_id=slot.id, outcome=_RETRY, error=reason))
            if slot.task is not None and not slot.task.done():
                slot.cancelled = True
                slot.task.cancel()
        return n

    # ---- sending ------------------------------------------------------

    def _emit(self, res: pb.Result) -> None:
        self.out.append(res)
        self._kick()

    def _kick(self) -> None:
        w = self.wake
        if w is not None and not w.done():
            w.set_result(None)

    async def flushed(self) -> None:
        """Wait until every queued result was written (or the stream broke)."""
        if self.out or self.sending:
            f = self.loop.create_future()
            self.flush_waiters.append(f)
            await f

    async def _sender(self) -> None:
        # Never waits for results to accumulate: whatever was queued while
        # the previous write was in progress (or before this task ran) leaves
        # in the next message.
        while True:
            if not self.out:
                self.sending = False
                for f in self.flush_waiters:
                    if not f.done():
                        f.set_result(None)
                self.flush_waiters.clear()
                if self.closing:
                    return
                self.wake = self.loop.create_future()
                await self.wake
                self.wake = None
                continue
            out, self.out = self.out, []
            self.sending = True
            if self.broken:
                continue
            for msg, first in self._messages(out):
                try:
                    await self.send(msg)
                except Exception as e:  # noqa: BLE001 - stream gone; the core retries
                    self.broken = True
                    self.log.warn("could not send a result: the stream is closed; the core retries the event",
                                  delivery_id=first, error=type(e).__name__)
                    break

    def _messages(self, out: list[pb.Result]) -> Any:
        """(message, first delivery id) pairs carrying out: one result per
        message unless the core accepts batches, else batches cut at
        BATCH_BYTES."""
        n = len(out)
        if not self.batches or n == 1:
            for r in out:
                yield _Response(result=r), r.delivery_id
            return
        i = 0
        while i < n:
            size, j = out[i].ByteSize(), i + 1
            while j < n:
                s = out[j].ByteSize()
                if size + s > BATCH_BYTES:
                    break
                size += s
                j += 1
            if j - i == 1:
                yield _Response(result=out[i]), out[i].delivery_id
            else:
                yield _Response(results=_Batch(results=out[i:j])), out[i].delivery_id
            i = j


def _identity(v: Any) -> Any:
    return v


def _isawaitable(v: Any) -> bool:
    # inspect.isawaitable, minus its cost for the common return values.
    if v is None or type(v) in (list, tuple):
        return False
    import inspect
    return inspect.isawaitable(v)
