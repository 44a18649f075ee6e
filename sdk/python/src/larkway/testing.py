"""An in-process test kit for larkway plugins: no process, no network.

Build sample events, run them through a Plugin exactly as the core's Handle
stream would (deadline, routing, outcome classing, action encoding), and get
plain results back::

    from larkway import testing

    def test_echo():
        res = testing.run(p, testing.message("hello"))
        assert res.outcome == "done"
        assert res.texts == ["echo: hello"]
        assert res.actions[0].kind == "reply"

``run`` is synchronous (it runs its own event loop); from async tests use
``await run_async(...)``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from google.protobuf import json_format, timestamp_pb2

from ._actions import ActionSummary, CardResponse, _json
from ._event import (EVENT_CARD_ACTION, EVENT_MESSAGE_RECEIVE, CardAction, Event, Mention, Message, User)
from ._gen import plugin_pb2 as pb
from ._plugin import Plugin
from ._state import Entry

__all__ = ["MemoryState", "Result", "assert_done", "assert_reply_text", "card_action", "event", "manifest", "message", "run",
           "run_async", "run_many", "run_many_async"]

_seq = itertools.count(1)
_TOASTS = {pb.TOAST_TYPE_SUCCESS: "success", pb.TOAST_TYPE_WARNING: "warning", pb.TOAST_TYPE_ERROR: "error"}
_OUTCOMES = {pb.OUTCOME_DONE: "done", pb.OUTCOME_RETRY: "retry", pb.OUTCOME_FAILED: "failed"}


def message(text: str, *, mentions: Sequence[str | Mention] = (), chat_id: str = "oc_test_chat",
            chat_type: str = "group", sender: str = "ou_test_user", message_id: str = "",
            msg_type: str = "text", content_json: str = "", thread_id: str = "", root_id: str = "",
            parent_id: str = "", event_id: str = "", app_id: str = "cli_test_app") -> Event:
    """An im.message.receive_v1 event as the core normalizes it.

    ``text`` is the plain text the core hands plugins, mentions already
    replaced by names (``"@Bot /deploy prod"``). ``mentions`` lists mentioned
    names (or Mention values); each gets a placeholder key (``@_user_1``)
    which replaces ``@name`` in the generated content JSON, as Lark sends it.
    """
    n = next(_seq)
    ms: list[Mention] = []
    for i, m in enumerate(mentions, 1):
        ms.append(m if isinstance(m, Mention) else
                  Mention(key=f"@_user_{i}", name=m, id=User(open_id=f"ou_mention_{i}", sender_type="user")))
    if not content_json:
        raw_text = text
        for m in ms:
            raw_text = raw_text.replace(f"@{m.name}", m.key, 1)
        content_json = json.dumps({"text": raw_text}, ensure_ascii=False, separators=(",", ":"))
    msg = Message(id=message_id or f"om_test_{n}", root_id=root_id, parent_id=parent_id, thread_id=thread_id,
                  chat_id=chat_id, chat_type=chat_type, type=msg_type, content_json=content_json, text=text,
                  mentions=tuple(ms))
    sender_user = User(open_id=sender, sender_type="user")
    ev_id = event_id or f"ev_test_{n}"
    raw = {
        "schema": "2.0",
        "header": {"event_id": ev_id, "event_type": EVENT_MESSAGE_RECEIVE, "app_id": app_id, "tenant_key": "t_test"},
        "event": {"sender": {"sender_id": {"open_id": sender}, "sender_type": "user"},
                  "message": {"message_id": msg.id, "chat_id": chat_id, "chat_type": chat_type,
                              "message_type": msg_type, "content": content_json,
                              "mentions": [{"key": m.key, "name": m.name, "id": {"open_id": m.id.open_id}}
                                           for m in ms]}},
    }
    return Event(id=ev_id, type=EVENT_MESSAGE_RECEIVE, app_id=app_id, tenant_key="t_test", schema="2.0",
                 dedup_key=msg.id, chat_id=chat_id, create_time=datetime.now(timezone.utc), sender=sender_user,
                 message=msg, raw=json.dumps(raw, ensure_ascii=False).encode())


def card_action(value: Any = None, *, form: Any = None, tag: str = "button", name: str = "", option: str = "",
                input_value: str = "", token: str = "c-test-token", message_id: str = "om_test_card",
                chat_id: str = "oc_test_chat", operator: str = "ou_test_user", awaits_response: bool = True,
                event_id: str = "", event_type: str = EVENT_CARD_ACTION) -> Event:
    """A card.action.trigger callback: a click with ``value`` (dict or JSON
    string) or a form submission with ``form``."""
    n = next(_seq)
    op = User(open_id=operator)
    ca = CardAction(message_id=message_id, chat_id=chat_id, token=token, tag=tag, name=name, option=option,
                    value_json=_json(value) if value is not None else "",
                    form_json=_json(form) if form is not None else "", input_value=input_value,
                    operator=op, awaits_response=awaits_response)
    ev_id = event_id or f"ev_test_{n}"
    return Event(id=ev_id, type=event_type, app_id="cli_test_app", tenant_key="t_test", schema="2.0",
                 dedup_key=ev_id, chat_id=chat_id, create_time=datetime.now(timezone.utc), sender=op,
                 card_action=ca, raw=b"{}")


def event(event_type: str, *, raw: Any = None, chat_id: str = "", sender: str = "", event_id: str = "") -> Event:
    """Any other event type, with its raw JSON (dict, str or bytes)."""
    n = next(_seq)
    if raw is None:
        b = b"{}"
    elif isinstance(raw, bytes):
        b = raw
    else:
        b = _json(raw).encode()
    ev_id = event_id or f"ev_test_{n}"
    return Event(id=ev_id, type=event_type, app_id="cli_test_app", tenant_key="t_test", schema="2.0",
                 dedup_key=ev_id, chat_id=chat_id, create_time=datetime.now(timezone.utc),
                 sender=User(open_id=sender), raw=b)


@dataclass
class Result:
    """A plugin's answer to one delivery, as plain values."""

    delivery_id: str
    #: "done", "retry" or "failed".
    outcome: str
    error: str = ""
    #: Minimum retry delay in seconds (RETRY only), or None.
    retry_after: float | None = None
    actions: list[ActionSummary] = field(default_factory=list)
    card_response: CardResponse | None = None

    @property
    def texts(self) -> list[str]:
        """The text of every action whose content is a text message."""
        out = []
        for a in self.actions:
            if a.msg_type == "text":
                try:
                    out.append(json.loads(a.content_json)["text"])
                except (ValueError, KeyError, TypeError):
                    pass
        return out


def _ts(dt: datetime | None) -> timestamp_pb2.Timestamp | None:
    if dt is None:
        return None
    t = timestamp_pb2.Timestamp()
    t.FromDatetime(dt)
    return t


def _user(u: User) -> pb.UserId:
    return pb.UserId(open_id=u.open_id, user_id=u.user_id, union_id=u.union_id, sender_type=u.sender_type)


def _event_proto(ev: Event) -> pb.Event:
    pe = pb.Event(event_id=ev.id, event_type=ev.type, app_id=ev.app_id, tenant_key=ev.tenant_key, schema=ev.schema,
                  dedup_key=ev.dedup_key, chat_id=ev.chat_id, sender=_user(ev.sender), raw_json=ev.raw)
    if ev.create_time is not None:
        pe.create_time.CopyFrom(_ts(ev.create_time))
    if ev.message is not None:
        m = ev.message
        pe.message.CopyFrom(pb.Message(
            message_id=m.id, root_id=m.root_id, parent_id=m.parent_id, thread_id=m.thread_id, chat_id=m.chat_id,
            chat_type=m.chat_type, message_type=m.type, content_json=m.content_json, text=m.text,
            resource_key=m.resource_key,
            mentions=[pb.Mention(key=x.key, name=x.name, id=_user(x.id)) for x in m.mentions]))
    elif ev.card_action is not None:
        c = ev.card_action
        pe.card_action.CopyFrom(pb.CardAction(
            open_message_id=c.message_id, open_chat_id=c.chat_id, token=c.token, tag=c.tag, value_json=c.value_json,
            option=c.option, name=c.name, form_value_json=c.form_json, input_value=c.input_value,
            timezone=c.timezone, operator=_user(c.operator), awaits_response=c.awaits_response))
    return pe


def _delivery(ev: Event, deadline: float | None, attempt: int) -> pb.Delivery:
    d = pb.Delivery(delivery_id=f"test-{next(_seq)}", event=_event_proto(ev), attempt=attempt,
                    trace_context=ev.trace_context)
    if deadline is not None:
        d.deadline.CopyFrom(_ts(datetime.fromtimestamp(time.time() + deadline, tz=timezone.utc)))
    return d


def _result(r: pb.Result) -> Result:
    out = Result(delivery_id=r.delivery_id, outcome=_OUTCOMES.get(r.outcome, "unspecified"), error=r.error)
    if r.HasField("retry_after"):
        out.retry_after = r.retry_after.seconds + r.retry_after.nanos / 1e9
    out.actions = [_summary(a) for a in r.actions]
    if r.HasField("card_response"):
        cr = r.card_response
        out.card_response = CardResponse(toast=cr.toast.content, toast_type=_TOASTS.get(cr.toast.type, "info"),
                                         card_json=cr.card_json)
    return out


def _summary(a: pb.Action) -> ActionSummary:
    k = a.WhichOneof("kind")
    if k == "send":
        return ActionSummary("send", a.send.receive_id, a.send.msg_type, a.send.content_json)
    if k == "reply":
        return ActionSummary("reply", a.reply.message_id, a.reply.msg_type, a.reply.content_json,
                             a.reply.reply_in_thread)
    if k == "update_card":
        return ActionSummary("update_card", a.update_card.message_id, "interactive", a.update_card.card_json)
    if k == "delayed_card_update":
        return ActionSummary("delayed_card_update", a.delayed_card_update.token, "interactive",
                             a.delayed_card_update.card_json)
    if k == "add_reaction":
        return ActionSummary("add_reaction", a.add_reaction.message_id, "", a.add_reaction.emoji_type)
    if k == "remove_reaction":
        return ActionSummary("remove_reaction", a.remove_reaction.message_id, "", a.remove_reaction.reaction_id)
    if k == "raw_call":
        return ActionSummary("raw_call", a.raw_call.path, a.raw_call.method, a.raw_call.body_json)
    return ActionSummary("")


async def _run_protos(plugin: Plugin, deliveries: Sequence[pb.Delivery], *, batch: bool = False,
                      result_batches: bool = True) -> list[pb.Result]:
    """Feed deliveries through the plugin's Handle stream body; return results
    in delivery order (internal: the SDK's own tests use it for malformed
    deliveries). ``batch`` sends them in one DeliveryBatch, as a core may;
    ``result_batches`` says whether the "core" accepts ResultBatch."""
    got: list[pb.Result] = []

    async def requests() -> AsyncIterator[pb.HandleRequest]:
        if batch:
            yield pb.HandleRequest(deliveries=pb.DeliveryBatch(deliveries=deliveries))
            return
        for d in deliveries:
            yield pb.HandleRequest(delivery=d)

    async def send(resp: pb.HandleResponse) -> None:
        if resp.WhichOneof("kind") == "results":
            if not result_batches:
                raise AssertionError("the plugin sent a ResultBatch to a core that does not accept them")
            got.extend(resp.results.results)
        else:
            got.append(resp.result)

    await plugin._serve_stream(requests(), send, result_batches=result_batches)
    by_id: dict[str, pb.Result] = {}
    for r in got:
        by_id.setdefault(r.delivery_id, r)
    out = []
    for d in deliveries:
        r = by_id.get(d.delivery_id)
        if r is None:
            raise AssertionError(f"no result for delivery {d.delivery_id!r}")
        out.append(r)
    return out


async def run_many_async(plugin: Plugin, events: Iterable[Event], *, deadline: float | None = 10.0,
                         attempt: int = 1) -> list[Result]:
    """Run events concurrently on one stream; results in event order. They
    are sent in one DeliveryBatch, as the core sends whatever is ready."""
    ds = [_delivery(ev, deadline, attempt) for ev in events]
    return [_result(r) for r in await _run_protos(plugin, ds, batch=True)]


async def run_async(plugin: Plugin, ev: Event, *, deadline: float | None = 10.0, attempt: int = 1) -> Result:
    """Run one event through the plugin; ``deadline`` is in seconds from now
    (None: no deadline)."""
    return (await run_many_async(plugin, [ev], deadline=deadline, attempt=attempt))[0]


def run(plugin: Plugin, ev: Event, *, deadline: float | None = 10.0, attempt: int = 1) -> Result:
    """Run one event through the plugin and return its result (synchronous)."""
    return asyncio.run(run_async(plugin, ev, deadline=deadline, attempt=attempt))


def run_many(plugin: Plugin, events: Iterable[Event], *, deadline: float | None = 10.0,
             attempt: int = 1) -> list[Result]:
    """Run events concurrently (up to the plugin's max_in_flight) on one
    stream; results in event order (synchronous)."""
    return asyncio.run(run_many_async(plugin, events, deadline=deadline, attempt=attempt))


def manifest(plugin: Plugin) -> dict[str, Any]:
    """The manifest the plugin would describe to the core, as a dict with the
    contract's field names (e.g. ``manifest(p)["subscriptions"]``)."""
    return json_format.MessageToDict(plugin.manifest_proto(), preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def assert_done(res: Result) -> None:
    """Fail unless the outcome is done (like the Go kit's RequireDone)."""
    assert res.outcome == "done", f"outcome {res.outcome} ({res.error}), want done"


def assert_reply_text(res: Result, substr: str) -> None:
    """Fail unless the outcome is done with exactly one action, a text reply
    containing substr (like the Go kit's RequireReplyText)."""
    assert_done(res)
    assert len(res.actions) == 1 and res.actions[0].kind == "reply" and res.actions[0].msg_type == "text", \
        f"actions {res.actions}, want one text reply"
    assert substr in res.texts[0], f"reply {res.texts[0]!r} does not contain {substr!r}"


class MemoryState:
    """An in-memory state store for tests, with the core's semantics
    (revisions change on every write; compare_and_swap with 0 means "must
    not exist"); TTLs are accepted and ignored::

        p = new_plugin()
        p.set_state_backend(testing.MemoryState())

    Safe for concurrent use; ``data`` shows what is stored (key → bytes).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rev = 0
        self._entries: dict[str, Entry] = {}

    @property
    def data(self) -> dict[str, bytes]:
        with self._lock:
            return {k: e.value for k, e in self._entries.items()}

    def get(self, key: str, timeout: float | None = None) -> Entry | None:
        with self._lock:
            return self._entries.get(key)

    def set(self, key: str, value: bytes, ttl: float | None = None, timeout: float | None = None) -> int:
        with self._lock:
            self._rev += 1
            self._entries[key] = Entry(bytes(value), self._rev)
            return self._rev

    def compare_and_swap(self, key: str, expected_revision: int, value: bytes, ttl: float | None = None,
                         timeout: float | None = None) -> tuple[bool, int]:
        with self._lock:
            cur = self._entries.get(key)
            rev = cur.revision if cur is not None else 0
            if rev != expected_revision:
                return False, rev
            self._rev += 1
            self._entries[key] = Entry(bytes(value), self._rev)
            return True, self._rev

    def delete(self, key: str, timeout: float | None = None) -> bool:
        with self._lock:
            return self._entries.pop(key, None) is not None
