from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

#: Well-known event types.
EVENT_MESSAGE_RECEIVE = "im.message.receive_v1"
EVENT_CARD_ACTION = "card.action.trigger"
EVENT_CARD_ACTION_LEGACY = "card.action.trigger_v1"


@dataclass(frozen=True)
class User:
    """The ids Lark gives for a user or bot."""

    open_id: str = ""
    user_id: str = ""
    union_id: str = ""
    #: "user" or "app" for message senders.
    sender_type: str = ""


@dataclass(frozen=True)
class Mention:
    """An @-mention in a message."""

    #: The placeholder in the content, e.g. "@_user_1".
    key: str = ""
    #: Display name (what the placeholder was replaced by in Message.text).
    name: str = ""
    id: User = field(default_factory=User)


@dataclass(frozen=True)
class Message:
    """A received chat message."""

    id: str = ""
    root_id: str = ""
    parent_id: str = ""
    thread_id: str = ""
    chat_id: str = ""
    #: "p2p", "group" or "topic_group".
    chat_type: str = ""
    #: The msg_type: "text", "post", "image", ...
    type: str = ""
    #: Lark's content JSON string.
    content_json: str = ""
    #: Plain text, with mention placeholders replaced by names.
    text: str = ""
    mentions: tuple[Mention, ...] = ()
    #: image_key or file_key for image and file messages.
    resource_key: str = ""


@dataclass(frozen=True)
class CardAction:
    """A click or form submission on an interactive card."""

    message_id: str = ""
    chat_id: str = ""
    #: The delayed-update credential (see delayed_card_update).
    token: str = ""
    tag: str = ""
    name: str = ""
    option: str = ""
    #: The component's value as JSON.
    value_json: str = ""
    #: Submitted form values as JSON.
    form_json: str = ""
    input_value: str = ""
    timezone: str = ""
    operator: User = field(default_factory=User)
    #: True when Lark's callback waits for the handler's CardResponse.
    awaits_response: bool = False

    @property
    def value(self) -> Any:
        """value_json decoded (None when empty)."""
        return json.loads(self.value_json) if self.value_json else None

    @property
    def form(self) -> Any:
        """form_json decoded (None when empty)."""
        return json.loads(self.form_json) if self.form_json else None


@dataclass(frozen=True)
class Event:
    """One Lark event or callback, normalized by the core from schema 1.0 or 2.0.

    ``message`` or ``card_action`` is set for those kinds; ``raw`` always holds
    the event JSON exactly as Lark sent it.
    """

    id: str = ""
    type: str = ""
    app_id: str = ""
    tenant_key: str = ""
    schema: str = ""
    dedup_key: str = ""
    chat_id: str = ""
    create_time: datetime | None = None
    sender: User = field(default_factory=User)
    message: Message | None = None
    card_action: CardAction | None = None
    raw: bytes = b""
    #: 1 on the first delivery; counts redeliveries.
    attempt: int = 1
    #: The delivery's deadline (UTC); a result after it is dropped by the core.
    deadline: datetime | None = None
    #: The delivery attempt's id, for logs.
    delivery_id: str = ""
    #: W3C trace context (traceparent, tracestate).
    trace_context: dict[str, str] = field(default_factory=dict)

    def time_left(self) -> float | None:
        """Seconds until the deadline (may be negative), or None without one."""
        if self.deadline is None:
            return None
        return self.deadline.timestamp() - time.time()

    def raw_json(self) -> Any:
        """``raw`` decoded (None when empty)."""
        return json.loads(self.raw) if self.raw else None


_new = object.__new__
_UTC = timezone.utc
_fromtimestamp = datetime.fromtimestamp


def _ts(ts: Any) -> datetime | None:
    # A zero Timestamp (not set) maps to None.
    s, n = ts.seconds, ts.nanos
    if s == 0 and n == 0:
        return None
    return _fromtimestamp(s + n / 1e9, tz=_UTC)


# The builders below fill the frozen dataclasses' __dict__ directly: their
# generated __init__ sets each field through object.__setattr__, which made
# building an Event cost more than parsing the delivery. Every field is set.

def _user(u: Any) -> User:
    o = _new(User)
    o.__dict__.update(open_id=u.open_id, user_id=u.user_id, union_id=u.union_id, sender_type=u.sender_type)
    return o


def event_from_proto(d: Any) -> Event:
    """Build an Event from a pluginv1 Delivery (internal)."""
    pe = d.event
    message = card = None
    kind = pe.WhichOneof("payload")
    if kind == "message":
        m = pe.message
        ms = m.mentions
        message = _new(Message)
        message.__dict__.update(
            id=m.message_id, root_id=m.root_id, parent_id=m.parent_id, thread_id=m.thread_id,
            chat_id=m.chat_id, chat_type=m.chat_type, type=m.message_type,
            content_json=m.content_json, text=m.text, resource_key=m.resource_key,
            mentions=tuple(Mention(key=x.key, name=x.name, id=_user(x.id)) for x in ms) if ms else (),
        )
    elif kind == "card_action":
        c = pe.card_action
        card = _new(CardAction)
        card.__dict__.update(
            message_id=c.open_message_id, chat_id=c.open_chat_id, token=c.token,
            tag=c.tag, name=c.name, option=c.option, value_json=c.value_json,
            form_json=c.form_value_json, input_value=c.input_value, timezone=c.timezone,
            operator=_user(c.operator), awaits_response=c.awaits_response,
        )
    tc = d.trace_context
    ev = _new(Event)
    ev.__dict__.update(
        id=pe.event_id, type=pe.event_type, app_id=pe.app_id, tenant_key=pe.tenant_key,
        schema=pe.schema, dedup_key=pe.dedup_key, chat_id=pe.chat_id, create_time=_ts(pe.create_time),
        sender=_user(pe.sender), message=message, card_action=card, raw=bytes(pe.raw_json),
        attempt=int(d.attempt), deadline=_ts(d.deadline), delivery_id=d.delivery_id,
        trace_context=dict(tc) if tc else {},
    )
    return ev
