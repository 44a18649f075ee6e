from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from google.protobuf import duration_pb2

from ._actions import Action, ActionKind, CardResponse
from ._command import Command, parse_command
from ._errors import Permanent, RetryAfter, classify
from ._event import (EVENT_CARD_ACTION, EVENT_CARD_ACTION_LEGACY, EVENT_MESSAGE_RECEIVE, Event,
                     event_from_proto)
from ._gen import plugin_pb2 as pb
from ._log import Logger
from ._state import State, StateBackend, _deadline

#: Concurrent deliveries when the plugin sets no max_in_flight (as the Go SDK).
DEFAULT_MAX_IN_FLIGHT = 64

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")

HandlerFunc = Callable[[Event], Any]
CommandFunc = Callable[[Event, Command], Any]


class _BadReturn(Exception):
    pass


def _is_async(fn: Callable[..., Any]) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


def _actions(v: Any) -> list[Action]:
    if v is None:
        return []
    if isinstance(v, Action):
        return [v]
    if isinstance(v, (list, tuple)):
        bad = [x for x in v if not isinstance(x, Action)]
        if bad:
            raise _BadReturn(f"handler returned a list holding {type(bad[0]).__name__}; want only Action values "
                             "(build them with larkway.reply_text, larkway.send, ...)")
        return list(v)
    raise _BadReturn(f"handler returned {type(v).__name__}; want None, an Action or a list of Actions")


def _card_result(v: Any) -> tuple[CardResponse | None, list[Action]]:
    if isinstance(v, CardResponse):
        return v, []
    if isinstance(v, tuple) and len(v) == 2 and (v[0] is None or isinstance(v[0], CardResponse)):
        return v[0], _actions(v[1])
    return None, _actions(v)


class Plugin:
    """A handler plugin: identity, manifest and handlers.

    >>> p = Plugin("py-echo", "1.0.0", actions=[ActionKind.REPLY])
    >>> @p.on_message
    ... def echo(ev):
    ...     return reply_text("echo: " + ev.message.text)

    Handlers may be plain functions (run on a worker thread) or ``async def``
    coroutines (run on the plugin's event loop); both may run concurrently, up
    to ``max_in_flight`` at once. A handler returns None, an Action or a list
    of Actions (card handlers: a CardResponse, a list of Actions, or a tuple
    ``(CardResponse | None, actions)``). Returning normally means DONE;
    raising ``Permanent`` means FAILED (dead-lettered); raising ``RetryAfter``
    or any other exception means RETRY.

    Register handlers before ``main()``; the manifest is derived from them.
    """

    def __init__(self, name: str, version: str, *, actions: Iterable[ActionKind | int] = (),
                 max_in_flight: int = 0, description: str = "", fallback_reply: str = "",
                 chats: Iterable[str] = (), logger: Logger | None = None) -> None:
        if not _NAME_RE.match(name):
            raise ValueError(f"plugin name {name!r}: want lowercase letters, digits and dashes")
        if not version:
            raise ValueError("plugin version is empty")
        if not 0 <= int(max_in_flight) <= 10000:
            raise ValueError(f"max_in_flight {max_in_flight}: want 0..10000 (0 means the core's default)")
        self.name = name
        self.version = version
        self.description = description
        self.fallback_reply = fallback_reply
        self.actions = [ActionKind(a) for a in actions]
        self.max_in_flight = int(max_in_flight)
        self.chats = list(chats)
        self.log = logger or Logger()
        self._by_type: dict[str, HandlerFunc] = {}
        self._commands: dict[str, CommandFunc] = {}
        self._on_message: HandlerFunc | None = None
        self._patterns: list[str] = []
        self._on_card: HandlerFunc | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._draining = False
        self._state = State()

    # ---- registration -------------------------------------------------

    def on_event(self, event_type: str) -> Callable[[HandlerFunc], HandlerFunc]:
        """Decorator: handle every event of one type, ``fn(ev) -> actions``."""
        if not event_type:
            raise ValueError("on_event: event type is empty")

        def register(fn: HandlerFunc) -> HandlerFunc:
            self._by_type[event_type] = _check_callable(fn)
            return fn
        return register

    def on_message(self, fn: HandlerFunc | None = None, *, patterns: Iterable[str] = ()) -> Any:
        """Decorator: handle received messages no command handler took,
        ``fn(ev) -> actions``. ``@p.on_message(patterns=[r"^hi"])`` asks the
        core to deliver only messages whose text matches one of the RE2
        patterns."""
        def register(f: HandlerFunc) -> HandlerFunc:
            self._on_message = _check_callable(f)
            self._patterns.extend(patterns)
            return f
        return register if fn is None else register(fn)

    def on_command(self, name: str) -> Callable[[CommandFunc], CommandFunc]:
        """Decorator: handle a message command such as ``/deploy``,
        ``fn(ev, cmd) -> actions`` with the parsed Command. Names are matched
        lowercased."""
        if len(name) < 2 or not name.startswith("/") or any(c.isspace() for c in name):
            raise ValueError(f"command {name!r}: want / followed by a word, e.g. /deploy")
        key = name.lower()

        def register(fn: CommandFunc) -> CommandFunc:
            self._commands[key] = _check_callable(fn)
            return fn
        return register

    def on_card_action(self, fn: HandlerFunc | None = None) -> Any:
        """Decorator: handle clicks on cards this plugin sent, ``fn(ev) ->
        CardResponse | actions | (CardResponse, actions)``."""
        def register(f: HandlerFunc) -> HandlerFunc:
            self._on_card = _check_callable(f)
            return f
        return register if fn is None else register(fn)

    def commands(self) -> list[str]:
        """Registered command names in registration order."""
        return list(self._commands)

    # ---- state --------------------------------------------------------

    @property
    def state(self) -> State:
        """The plugin's key-value store, kept by the core (see State):
        ``p.state.get(key)``, ``set``, ``compare_and_swap``, ``delete``."""
        return self._state

    def set_state_backend(self, backend: StateBackend | None) -> None:
        """Replace the state store's backend; tests use
        ``p.set_state_backend(larkway.testing.MemoryState())``."""
        self._state._set_backend(backend)

    # ---- manifest -----------------------------------------------------

    def manifest_proto(self) -> pb.Manifest:
        """The manifest derived from the registered handlers (internal form)."""
        m = pb.Manifest(name=self.name, version=self.version, description=self.description,
                        max_in_flight=self.max_in_flight, fallback_reply_text=self.fallback_reply,
                        allowed_actions=[int(a) for a in self.actions])

        def sub(**kw: Any) -> None:
            m.subscriptions.append(pb.Subscription(chat_ids=self.chats, **kw))
        if self._on_message is not None:
            sub(event_types=[EVENT_MESSAGE_RECEIVE], text_patterns=self._patterns)
        elif self._commands:
            sub(event_types=[EVENT_MESSAGE_RECEIVE], commands=list(self._commands))
        if self._on_card is not None:
            sub(event_types=[EVENT_CARD_ACTION, EVENT_CARD_ACTION_LEGACY])
        for t in self._by_type:
            sub(event_types=[t])
        return m

    # ---- handling -----------------------------------------------------

    @property
    def _limit(self) -> int:
        return self.max_in_flight or DEFAULT_MAX_IN_FLIGHT

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if _is_async(fn):
            return await fn(*args)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self._limit, thread_name_prefix="larkway-handler")
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._executor, functools.partial(contextvars.copy_context().run, fn, *args))
        try:
            res = await asyncio.shield(fut)
        except asyncio.CancelledError:
            # A thread cannot be interrupted: keep this task (and so the
            # delivery's in-flight slot) until the handler really returns.
            try:
                await fut
            except BaseException:
                pass
            raise
        if inspect.isawaitable(res):
            res = await res
        return res

    async def _route(self, ev: Event) -> tuple[list[Action], CardResponse | None]:
        if ev.card_action is not None and self._on_card is not None:
            card, actions = _card_result(await self._call(self._on_card, ev))
            return actions, card
        if ev.message is not None:
            cmd = parse_command(ev.message.text)
            if cmd is not None and cmd.name in self._commands:
                return _actions(await self._call(self._commands[cmd.name], ev, cmd)), None
            if self._on_message is not None:
                return _actions(await self._call(self._on_message, ev)), None
        h = self._by_type.get(ev.type)
        if h is not None:
            return _actions(await self._call(h, ev)), None
        # Delivered but nothing handles it (e.g. an unknown command while only
        # commands are registered): done, no actions.
        return [], None

    async def _handle(self, ev: Event) -> pb.Result:
        """Route one event and class the outcome. Raises only CancelledError."""
        # State calls made by the handler are bounded by the delivery's
        # deadline (this runs in its own task, so its own context).
        _deadline.set(ev.deadline)
        try:
            actions, card = await self._route(ev)
        except asyncio.CancelledError as e:
            task = asyncio.current_task()
            if task is not None and hasattr(task, "cancelling") and task.cancelling() == 0:
                # Nobody cancelled this delivery: the handler itself raised
                # CancelledError (e.g. from work it awaited). A handler error.
                self.log.log(40, "handler raised CancelledError; the event will be retried", exc=e,
                             event_id=ev.id, delivery_id=ev.delivery_id)
                return pb.Result(outcome=pb.OUTCOME_RETRY, error="CancelledError: the handler was cancelled")
            raise
        except _BadReturn as e:
            self.log.error("handler returned an invalid value", event_id=ev.id, delivery_id=ev.delivery_id,
                           error=str(e))
            return pb.Result(outcome=pb.OUTCOME_FAILED, error=str(e))
        except BaseException as e:  # noqa: BLE001 - a handler bug must not end the process
            k = classify(e)
            if isinstance(k, Permanent):
                return pb.Result(outcome=pb.OUTCOME_FAILED, error=str(k) or type(k).__name__)
            if isinstance(k, RetryAfter):
                res = pb.Result(outcome=pb.OUTCOME_RETRY, error=str(k))
                if k.seconds > 0:
                    d = duration_pb2.Duration()
                    d.FromNanoseconds(int(round(k.seconds * 1e9)))
                    res.retry_after.CopyFrom(d)
                return res
            self.log.log(40, "handler raised; the event will be retried", exc=e, event_id=ev.id,
                         delivery_id=ev.delivery_id)
            return pb.Result(outcome=pb.OUTCOME_RETRY, error=f"{type(e).__name__}: {e}")
        res = pb.Result(outcome=pb.OUTCOME_DONE)
        try:
            res.actions.extend(a.to_proto() for a in actions)
            if card is not None:
                res.card_response.CopyFrom(card.to_proto())
        except (ValueError, TypeError) as e:
            self.log.error("handler returned an invalid action", event_id=ev.id, error=str(e))
            return pb.Result(outcome=pb.OUTCOME_FAILED, error=f"invalid action: {e}")
        return res

    async def _deliver(self, d: pb.Delivery) -> tuple[pb.Result, asyncio.Task[Any] | None]:
        """Run one delivery under its deadline. Returns the result to send and,
        when the handler overran its deadline, the still-running work."""
        if not d.delivery_id or not d.HasField("event"):
            return pb.Result(delivery_id=d.delivery_id, outcome=pb.OUTCOME_FAILED,
                             error="malformed delivery: missing id or event"), None
        ev = event_from_proto(d)
        left = ev.time_left()
        if left is not None and left <= 0:
            self.log.warn("delivery arrived after its deadline; not handled", delivery_id=d.delivery_id,
                          event_id=ev.id)
            return pb.Result(delivery_id=d.delivery_id, outcome=pb.OUTCOME_RETRY,
                             error="deadline exceeded before the handler started"), None
        work = asyncio.ensure_future(self._handle(ev))
        try:
            res = await asyncio.wait_for(asyncio.shield(work), left)
        except asyncio.TimeoutError:  # the builtin TimeoutError from 3.11 on
            work.cancel()
            self.log.warn("handler overran its deadline; the core retries the event",
                          delivery_id=d.delivery_id, event_id=ev.id, deadline_s=round(left or 0, 3))
            return pb.Result(delivery_id=d.delivery_id, outcome=pb.OUTCOME_RETRY,
                             error="deadline exceeded"), work
        except asyncio.CancelledError:
            work.cancel()
            raise
        res.delivery_id = d.delivery_id
        return res, None

    async def _await_late(self, work: asyncio.Task[Any], delivery_id: str) -> None:
        # Keeps the delivery's in-flight slot until an overrunning handler
        # really ends (a thread cannot be cancelled; a coroutine was).
        try:
            await work
        except asyncio.CancelledError:
            if not work.cancelled():
                raise
        except BaseException:  # noqa: BLE001
            pass
        if work.cancelled():
            self.log.debug("late handler cancelled", delivery_id=delivery_id)
        else:
            self.log.warn("late handler finished; its result was dropped", delivery_id=delivery_id)

    async def _serve_stream(self, requests: AsyncIterator[pb.HandleRequest],
                            send: Callable[[pb.HandleResponse], Awaitable[None]]) -> None:
        """The transport-independent body of Handle: runs deliveries
        concurrently (bounded by max_in_flight), sends each result as it
        completes, returns when the core closes its side and every started
        delivery has answered. Shared by the gRPC server and the test kit."""
        sem = asyncio.Semaphore(self._limit)
        lock = asyncio.Lock()
        tasks: set[asyncio.Task[Any]] = set()
        broken = False

        async def send_result(res: pb.Result) -> None:
            nonlocal broken
            async with lock:
                if broken:
                    return
                try:
                    await send(pb.HandleResponse(result=res))
                except Exception as e:  # noqa: BLE001 - stream gone; the core retries
                    broken = True
                    self.log.warn("could not send a result: the stream is closed; the core retries the event",
                                  delivery_id=res.delivery_id, error=type(e).__name__)

        async def one(d: pb.Delivery) -> None:
            answered = False
            try:
                res, late = await self._deliver(d)
                answered = True
                await send_result(res)
                if late is not None:
                    await self._await_late(late, d.delivery_id)
            except asyncio.CancelledError:
                if not answered and d.delivery_id:
                    # Shutting down or the stream ended: answer so the core
                    # retries now rather than at the deadline.
                    await asyncio.shield(send_result(pb.Result(
                        delivery_id=d.delivery_id, outcome=pb.OUTCOME_RETRY, error="plugin is shutting down")))
                raise
            except Exception as e:  # noqa: BLE001 - never take the stream down
                self.log.log(40, "internal error handling a delivery", exc=e, delivery_id=d.delivery_id)
                if not answered:
                    await send_result(pb.Result(delivery_id=d.delivery_id, outcome=pb.OUTCOME_RETRY,
                                                error=f"sdk error: {e}"))
            finally:
                sem.release()

        try:
            async for req in requests:
                kind = req.WhichOneof("kind")
                if kind == "delivery":
                    d = req.delivery
                    if self._draining:
                        await send_result(pb.Result(delivery_id=d.delivery_id, outcome=pb.OUTCOME_RETRY,
                                                    error="plugin is shutting down"))
                        continue
                    await sem.acquire()
                    t = asyncio.ensure_future(one(d))
                    for s in (tasks, self._tasks):
                        s.add(t)
                        t.add_done_callback(s.discard)
                elif kind == "result_ack":
                    ack = req.result_ack
                    if ack.refused:
                        self.log.warn("core refused actions", delivery_id=ack.delivery_id,
                                      refused=len(ack.refused),
                                      reasons=[f"#{r.index}: {r.reason}" for r in ack.refused])
                    else:
                        self.log.debug("result acknowledged", delivery_id=ack.delivery_id)
                else:
                    self.log.debug("ignoring an unknown message from the core")
            # The core closed its side: finish what was started.
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    # ---- serving ------------------------------------------------------

    def main(self) -> None:
        """Serve the plugin and exit the process when the core stops it.
        Refuses to run (exit 1) when not started by a larkway core."""
        from ._serve import main
        main(self)

    def serve(self) -> None:
        """Serve until the core calls Shutdown, the process gets SIGTERM, or
        the core goes away; no magic-cookie check (main() does it)."""
        from ._serve import serve
        serve(self)


def _check_callable(fn: Any) -> Any:
    if not callable(fn):
        raise TypeError(f"handler {fn!r} is not callable")
    return fn
