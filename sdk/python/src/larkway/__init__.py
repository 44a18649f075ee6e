"""larkway: the Python SDK for larkway handler plugins.

A plugin is a Plugin with handlers registered by event type, command or card
action, and a one-line main::

    import larkway

    p = larkway.Plugin("py-echo", "1.0.0", actions=[larkway.ActionKind.REPLY])

    @p.on_message
    def echo(ev: larkway.Event):
        return larkway.reply_text("echo: " + ev.message.text)

    if __name__ == "__main__":
        p.main()

The SDK owns go-plugin's handshake (with AutoMTLS), the health service, the
Handle stream, deadlines, shutdown and JSON logging on stderr; ``p.state`` is
the key-value store the core keeps for the plugin. Test plugins in-process
with ``larkway.testing``.
"""

from ._actions import (Action, ActionKind, ActionSummary, CardResponse, add_reaction, delayed_card_update,
                       raw_call, remove_reaction, reply, reply_in_thread, reply_text, reply_to, send, send_text,
                       update_card)
from ._command import Command, parse_command
from ._errors import Permanent, RetryAfter
from ._event import (EVENT_CARD_ACTION, EVENT_CARD_ACTION_LEGACY, EVENT_MESSAGE_RECEIVE, CardAction, Event,
                     Mention, Message, User)
from ._log import Logger
from ._plugin import DEFAULT_MAX_IN_FLIGHT, Plugin
from ._state import Entry, State, StateBackend, StateError, StateUnavailable
from .contract import command_name

__version__ = "0.1.0"

__all__ = [
    "Action", "ActionKind", "ActionSummary", "CardAction", "CardResponse", "Command", "DEFAULT_MAX_IN_FLIGHT",
    "EVENT_CARD_ACTION", "EVENT_CARD_ACTION_LEGACY", "EVENT_MESSAGE_RECEIVE", "Entry", "Event", "Logger", "Mention",
    "Message", "Permanent", "Plugin", "RetryAfter", "State", "StateBackend", "StateError", "StateUnavailable", "User",
    "add_reaction", "command_name",
    "delayed_card_update", "parse_command", "raw_call", "remove_reaction", "reply", "reply_in_thread",
    "reply_text", "reply_to", "send", "send_text", "update_card",
]
