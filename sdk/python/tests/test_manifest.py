import json

import pytest

import larkway
from larkway import testing
from larkway._log import Logger


def test_manifest_mirrors_the_go_sdk():
    p = larkway.Plugin("full", "2.1.0", actions=[larkway.ActionKind.REPLY, larkway.ActionKind.REACTION],
                       max_in_flight=8, description="d", fallback_reply="sorry", chats=["oc_1"])
    p.on_message(lambda ev: None, patterns=[r"^hi"])
    p.on_command("/x")(lambda ev, cmd: None)
    p.on_card_action(lambda ev: None)
    p.on_event("im.chat.member.bot.added_v1")(lambda ev: None)
    m = testing.manifest(p)
    assert m["name"] == "full" and m["version"] == "2.1.0"
    assert m["max_in_flight"] == 8 and m["description"] == "d" and m["fallback_reply_text"] == "sorry"
    assert m["allowed_actions"] == ["ACTION_KIND_REPLY", "ACTION_KIND_REACTION"]
    subs = [(s["event_types"], s["commands"], s["text_patterns"], s["chat_ids"]) for s in m["subscriptions"]]
    assert subs == [
        # on_message takes every message (commands too), as in Go.
        (["im.message.receive_v1"], [], ["^hi"], ["oc_1"]),
        (["card.action.trigger", "card.action.trigger_v1"], [], [], ["oc_1"]),
        (["im.chat.member.bot.added_v1"], [], [], ["oc_1"]),
    ]


def test_commands_only_subscribe_to_their_commands():
    p = larkway.Plugin("cmds", "1.0.0")
    p.on_command("/a")(lambda ev, c: None)
    p.on_command("/b")(lambda ev, c: None)
    assert p.commands() == ["/a", "/b"]
    assert testing.manifest(p)["subscriptions"] == [
        {"event_types": ["im.message.receive_v1"], "commands": ["/a", "/b"], "text_patterns": [], "chat_ids": []}]


def test_on_event_routes_by_type():
    p = larkway.Plugin("typed", "1.0.0", actions=[larkway.ActionKind.SEND])

    @p.on_event("im.chat.member.bot.added_v1")
    def added(ev):
        return larkway.send_text("chat_id", ev.chat_id, "hello, " + ev.raw_json()["who"])

    res = testing.run(p, testing.event("im.chat.member.bot.added_v1", raw={"who": "team"}, chat_id="oc_9"))
    assert res.outcome == "done"
    assert res.actions == [larkway.ActionSummary("send", "oc_9", "text", '{"text":"hello, team"}')]
    # An event type nothing handles: done, no actions.
    assert testing.run(p, testing.event("other.type")).actions == []


@pytest.mark.parametrize("name", ["", "Upper", "-lead", "has space", "x" * 64])
def test_bad_names_are_refused(name):
    with pytest.raises(ValueError):
        larkway.Plugin(name, "1.0.0")


def test_bad_options_are_refused():
    with pytest.raises(ValueError):
        larkway.Plugin("ok", "")
    with pytest.raises(ValueError):
        larkway.Plugin("ok", "1", max_in_flight=10001)
    with pytest.raises(ValueError):
        larkway.Plugin("ok", "1", actions=[99])
    with pytest.raises(TypeError):
        larkway.Plugin("ok", "1").on_message("not callable")


def test_logger_writes_json_lines_with_level_and_msg(capsys):
    log = Logger(level="debug").bind(component="test")
    log.debug("d", n=1)
    log.info("i")
    log.warn("w", obj=object())
    log.error("e")
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert [(x["level"], x["msg"]) for x in lines] == [("DEBUG", "d"), ("INFO", "i"), ("WARN", "w"), ("ERROR", "e")]
    assert all(x["component"] == "test" and "time" in x for x in lines)
    assert lines[0]["n"] == 1


def test_logger_level_filter(capsys, monkeypatch):
    monkeypatch.setenv("LARKWAY_LOG_LEVEL", "warn")
    log = Logger()
    log.info("hidden")
    log.warn("shown")
    assert [json.loads(x)["msg"] for x in capsys.readouterr().err.splitlines()] == ["shown"]
