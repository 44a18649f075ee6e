from __future__ import annotations

import asyncio
import functools
import inspect
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from google.protobuf import duration_pb2

from ._actions import Action, ActionKind, CardResponse
from ._command import Command, parse_command
from ._errors import Permanent, RetryAfter, classify
from ._event import EVENT_CARD_ACTION, EVENT_CARD_ACTION_LEGACY, EVENT_MESSAGE_RECEIVE, Event
from ._gen import plugin_pb2 as pb
from ._log import Logger
from ._state import State, StateBackend
from ._stream import Pool, Stream

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
        self._pool: Pool | None = None
        self._async_cache: dict[int, tuple[Callable[..., Any], bool]] = {}
        self._streams: set[Stream] = set()
        self._draining = False
        # Set by Describe: the core accepts HandleResponse.results.
        self._accepts_result_batches = False
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
                        allowed_actions=[int(a) for a in self.actions],
                        # The SDK handles DeliveryBatch: fewer, larger messages
                        # are much cheaper for grpcio than one per delivery.
                        accepts_delivery_batches=True)

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

    def _workers(self) -> Pool:
        if self._pool is None:
            self._pool = Pool(self._limit, "larkway-handler")
        return self._pool

    def _is_async(self, fn: Callable[..., Any]) -> bool:
        # Cached: inspect's checks cost more than the rest of routing.
        k = id(fn)
        hit = self._async_cache.get(k)
        if hit is None or hit[0] is not fn:
            hit = self._async_cache[k] = (fn, _is_async(fn))
        return hit[1]

    def _pick(self, ev: Event) -> tuple[Callable[..., Any], tuple[Any, ...], bool, bool] | None:
        """The handler for ev: ``(fn, args, is_card, is_async)``, or None
        when nothing handles it."""
        if ev.card_action is not None and self._on_card is not None:
            return self._on_card, (ev,), True, self._is_async(self._on_card)
        if ev.message is not None:
            cmd = parse_command(ev.message.text)
            if cmd is not None and cmd.name in self._commands:
                fn = self._commands[cmd.name]
                return fn, (ev, cmd), False, self._is_async(fn)
            if self._on_message is not None:
                return self._on_message, (ev,), False, self._is_async(self._on_message)
        h = self._by_type.get(ev.type)
        if h is not None:
            return h, (ev,), False, self._is_async(h)
        return None

    def _outcome(self, v: Any, card: bool, ev: Event) -> pb.Result:
        """The result for a handler's return value v (any thread)."""
        try:
            if card:
                cr, actions = _card_result(v)
            else:
                cr, actions = None, _actions(v)
        except _BadReturn as e:
            self.log.error("handler returned an invalid value", event_id=ev.id, delivery_id=ev.delivery_id,
                           error=str(e))
            return pb.Result(outcome=pb.OUTCOME_FAILED, error=str(e))
        res = pb.Result(outcome=pb.OUTCOME_DONE)
        if actions or cr is not None:
            try:
                res.actions.extend(a.to_proto() for a in actions)
                if cr is not None:
                    res.card_response.CopyFrom(cr.to_proto())
            except (ValueError, TypeError) as e:
                self.log.error("handler returned an invalid action", event_id=ev.id, error=str(e))
                return pb.Result(outcome=pb.OUTCOME_FAILED, error=f"invalid action: {e}")
        return res

    def _failure(self, e: BaseException, ev: Event) -> pb.Result:
        """The result for an exception a handler raised (any thread):
        Permanent means FAILED, RetryAfter and anything else RETRY."""
        if isinstance(e, asyncio.CancelledError):
            self.log.log(40, "handler raised CancelledError; the event will be retried", exc=e,
                         event_id=ev.id, delivery_id=ev.delivery_id)
            return pb.Result(outcome=pb.OUTCOME_RETRY, error="CancelledError: the handler was cancelled")
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

    async def _serve_stream(self, requests: AsyncIterator[pb.HandleRequest],
                            send: Callable[[pb.HandleResponse], Awaitable[None]],
                            result_batches: bool | None = None) -> None:
        """The transport-independent body of Handle: runs deliveries (single
        or batched) concurrently, bounded by max_in_flight, sends results as
        they complete (in ResultBatch messages when result_batches, by
        default what the core said in Describe), returns when the core closes
        its side and every started delivery has ended. Shared by the gRPC
        server and the test kit."""
        if result_batches is None:
            result_batches = self._accepts_result_batches
        await Stream(self, send, result_batches).run(requests)

    async def _drain(self, grace: float) -> None:
        """Stop taking deliveries (new ones are answered with RETRY), wait up
        to grace for those in flight, then answer the rest with RETRY."""
        self._draining = True
        streams = list(self._streams)
        for s in streams:
            s._kick_reader()
        busy = [asyncio.ensure_future(s.wait_idle()) for s in streams if s.slots]
        if busy:
            _, pending = await asyncio.wait(busy, timeout=grace)
            for t in pending:
                t.cancel()
        n = sum(s.abort("plugin is shutting down") for s in streams)
        if n:
            self.log.warn("deliveries still running at shutdown; answering them with retry", count=n)
        flushing = [asyncio.ensure_future(s.flushed()) for s in streams]
        if flushing:
            _, pending = await asyncio.wait(flushing, timeout=0.2)
            for t in pending:
                t.cancel()

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
