from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from ._gen import plugin_pb2 as pb

#: A content argument: a JSON string, or a dict/list the SDK encodes.
JSONLike = Union[str, Mapping[str, Any], Sequence[Any]]


class ActionKind(enum.IntEnum):
    """A family of actions a plugin declares it may perform (manifest)."""

    SEND = 1
    REPLY = 2
    UPDATE_CARD = 3
    REACTION = 4
    RAW_CALL = 5


def _json(v: JSONLike) -> str:
    if isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


def _text(text: str) -> str:
    return json.dumps({"text": text}, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class ActionSummary:
    """A plain view of an action, for tests and logs."""

    #: "send", "reply", "update_card", "delayed_card_update", "add_reaction",
    #: "remove_reaction" or "raw_call".
    kind: str
    #: The message id, receive id, token or path the action applies to
    #: ("" means the delivery's own message or token).
    target: str = ""
    #: The msg_type ("interactive" for cards, the HTTP method for raw calls).
    msg_type: str = ""
    #: The content JSON (the emoji type or reaction id for reactions, the body
    #: for raw calls).
    content_json: str = ""
    in_thread: bool = False


@dataclass(frozen=True)
class Action:
    """One Lark operation for the core to perform. Build it with the builder
    functions (reply_text, send, ...), not directly."""

    kind: str
    message_id: str = ""
    receive_id_type: str = ""
    receive_id: str = ""
    msg_type: str = ""
    content_json: str = ""
    in_thread: bool = False
    token: str = ""
    open_ids: tuple[str, ...] = ()
    emoji_type: str = ""
    reaction_id: str = ""
    method: str = ""
    path: str = ""

    def summary(self) -> ActionSummary:
        k = self.kind
        if k == "send":
            return ActionSummary(k, self.receive_id, self.msg_type, self.content_json)
        if k == "reply":
            return ActionSummary(k, self.message_id, self.msg_type, self.content_json, self.in_thread)
        if k == "update_card":
            return ActionSummary(k, self.message_id, "interactive", self.content_json)
        if k == "delayed_card_update":
            return ActionSummary(k, self.token, "interactive", self.content_json)
        if k == "add_reaction":
            return ActionSummary(k, self.message_id, "", self.emoji_type)
        if k == "remove_reaction":
            return ActionSummary(k, self.message_id, "", self.reaction_id)
        if k == "raw_call":
            return ActionSummary(k, self.path, self.method, self.content_json)
        return ActionSummary(k)

    def to_proto(self) -> pb.Action:
        k = self.kind
        if k == "send":
            return pb.Action(send=pb.SendMessage(receive_id_type=self.receive_id_type, receive_id=self.receive_id,
                                                 msg_type=self.msg_type, content_json=self.content_json))
        if k == "reply":
            return pb.Action(reply=pb.ReplyMessage(message_id=self.message_id, msg_type=self.msg_type,
                                                   content_json=self.content_json, reply_in_thread=self.in_thread))
        if k == "update_card":
            return pb.Action(update_card=pb.UpdateCard(message_id=self.message_id, card_json=self.content_json))
        if k == "delayed_card_update":
            return pb.Action(delayed_card_update=pb.DelayedCardUpdate(
                token=self.token, card_json=self.content_json, open_ids=list(self.open_ids)))
        if k == "add_reaction":
            return pb.Action(add_reaction=pb.AddReaction(message_id=self.message_id, emoji_type=self.emoji_type))
        if k == "remove_reaction":
            return pb.Action(remove_reaction=pb.RemoveReaction(message_id=self.message_id, reaction_id=self.reaction_id))
        if k == "raw_call":
            return pb.Action(raw_call=pb.RawCall(method=self.method, path=self.path, body_json=self.content_json))
        raise ValueError(f"unknown action kind {k!r}")


def reply_text(text: str, *, in_thread: bool = False) -> Action:
    """Reply to the event's message with plain text."""
    return Action("reply", msg_type="text", content_json=_text(text), in_thread=in_thread)


def reply(msg_type: str, content_json: JSONLike) -> Action:
    """Reply to the event's message with any msg_type and its content JSON
    (e.g. "interactive" with a card)."""
    return Action("reply", msg_type=msg_type, content_json=_json(content_json))


def reply_in_thread(msg_type: str, content_json: JSONLike) -> Action:
    """Reply in a thread under the event's message."""
    return Action("reply", msg_type=msg_type, content_json=_json(content_json), in_thread=True)


def reply_to(message_id: str, msg_type: str, content_json: JSONLike) -> Action:
    """Reply to a message other than the event's own."""
    return Action("reply", message_id=message_id, msg_type=msg_type, content_json=_json(content_json))


def send_text(receive_id_type: str, receive_id: str, text: str) -> Action:
    """Send a text message; receive_id_type is "open_id", "user_id",
    "union_id", "email" or "chat_id"."""
    return Action("send", receive_id_type=receive_id_type, receive_id=receive_id, msg_type="text",
                  content_json=_text(text))


def send(receive_id_type: str, receive_id: str, msg_type: str, content_json: JSONLike) -> Action:
    """Send a message of any type."""
    return Action("send", receive_id_type=receive_id_type, receive_id=receive_id, msg_type=msg_type,
                  content_json=_json(content_json))


def update_card(message_id: str, card_json: JSONLike) -> Action:
    """Replace the content of a shared card message."""
    return Action("update_card", message_id=message_id, content_json=_json(card_json))


def delayed_card_update(token: str, card_json: JSONLike, open_ids: Iterable[str] = ()) -> Action:
    """Update the clicked card with the callback's token ("" means the
    delivery's own), optionally only for some users."""
    return Action("delayed_card_update", token=token, content_json=_json(card_json), open_ids=tuple(open_ids))


def add_reaction(message_id: str, emoji_type: str) -> Action:
    """Add an emoji reaction, e.g. "THUMBSUP" (message_id "" means the
    event's message)."""
    return Action("add_reaction", message_id=message_id, emoji_type=emoji_type)


def remove_reaction(message_id: str, reaction_id: str) -> Action:
    """Remove a reaction the bot added."""
    return Action("remove_reaction", message_id=message_id, reaction_id=reaction_id)


def raw_call(method: str, path: str, body_json: JSONLike = "") -> Action:
    """Perform any OpenAPI request (path starting with /open-apis/) with the
    tenant token."""
    return Action("raw_call", method=method, path=path, content_json=_json(body_json))


_TOAST_TYPES = {"info": pb.TOAST_TYPE_INFO, "success": pb.TOAST_TYPE_SUCCESS,
                "warning": pb.TOAST_TYPE_WARNING, "error": pb.TOAST_TYPE_ERROR}


@dataclass(frozen=True)
class CardResponse:
    """What Lark shows after a card click: a toast, a new card, or both."""

    #: Toast text; empty means no toast.
    toast: str = ""
    #: "info", "success", "warning" or "error".
    toast_type: str = "info"
    #: A card replacing the clicked one (JSON string or dict); empty keeps it.
    card_json: JSONLike = ""

    def to_proto(self) -> pb.CardResponse:
        out = pb.CardResponse(card_json=_json(self.card_json) if self.card_json else "")
        if self.toast:
            out.toast.CopyFrom(pb.Toast(type=_TOAST_TYPES.get(self.toast_type.lower(), pb.TOAST_TYPE_INFO),
                                        content=self.toast))
        return out
