import json

import pytest

import larkway
from larkway import ActionSummary, testing
from larkway._gen import plugin_pb2 as pb


@pytest.mark.parametrize("action,want", [
    (larkway.reply_text("hi"), ActionSummary("reply", "", "text", '{"text":"hi"}')),
    (larkway.reply_text("hi", in_thread=True), ActionSummary("reply", "", "text", '{"text":"hi"}', True)),
    (larkway.reply("interactive", {"elements": []}), ActionSummary("reply", "", "interactive", '{"elements":[]}')),
    (larkway.reply_in_thread("text", '{"text":"t"}'), ActionSummary("reply", "", "text", '{"text":"t"}', True)),
    (larkway.reply_to("om_1", "text", '{"text":"x"}'), ActionSummary("reply", "om_1", "text", '{"text":"x"}')),
    (larkway.send_text("chat_id", "oc_1", "héllo <b>"), ActionSummary("send", "oc_1", "text", '{"text":"héllo <b>"}')),
    (larkway.send("open_id", "ou_1", "post", {"zh_cn": {}}), ActionSummary("send", "ou_1", "post", '{"zh_cn":{}}')),
    (larkway.update_card("om_c", '{"a":1}'), ActionSummary("update_card", "om_c", "interactive", '{"a":1}')),
    (larkway.delayed_card_update("", {"a": 1}, ["ou_1"]), ActionSummary("delayed_card_update", "", "interactive", '{"a":1}')),
    (larkway.add_reaction("", "THUMBSUP"), ActionSummary("add_reaction", "", "", "THUMBSUP")),
    (larkway.remove_reaction("om_1", "r_1"), ActionSummary("remove_reaction", "om_1", "", "r_1")),
    (larkway.raw_call("POST", "/open-apis/x", {"k": "v"}), ActionSummary("raw_call", "/open-apis/x", "POST", '{"k":"v"}')),
])
def test_builders_summary_and_wire_form(action, want):
    assert action.summary() == want
    # The wire form round-trips through the test kit to the same summary.
    p = larkway.Plugin("acts", "1.0.0")
    p.on_message(lambda ev: action)
    res = testing.run(p, testing.message("x"))
    assert res.outcome == "done"
    assert res.actions == [want]


def test_wire_fields():
    a = larkway.send_text("email", "a@b.c", "hi").to_proto()
    assert a.WhichOneof("kind") == "send"
    assert (a.send.receive_id_type, a.send.receive_id, a.send.msg_type) == ("email", "a@b.c", "text")
    d = larkway.delayed_card_update("tok", "{}", ["ou_1", "ou_2"]).to_proto()
    assert list(d.delayed_card_update.open_ids) == ["ou_1", "ou_2"]
    assert d.delayed_card_update.token == "tok"
    r = larkway.reply_in_thread("text", "{}").to_proto()
    assert r.reply.reply_in_thread is True
    rc = larkway.raw_call("GET", "/open-apis/y").to_proto()
    assert (rc.raw_call.method, rc.raw_call.path, rc.raw_call.body_json) == ("GET", "/open-apis/y", "")


def test_text_content_is_json_like_go():
    # Same bytes as the Go SDK's json.Marshal for plain text.
    assert larkway.reply_text('say "hi"\n').content_json == '{"text":"say \\"hi\\"\\n"}'
    assert json.loads(larkway.reply_text("中文").content_json) == {"text": "中文"}


def test_card_action_handler_returns_response_and_actions():
    p = larkway.Plugin("cards", "1.0.0", actions=[larkway.ActionKind.UPDATE_CARD])
    got = {}

    @p.on_card_action
    def clicked(ev: larkway.Event):
        got["value"] = ev.card_action.value
        got["token"] = ev.card_action.token
        return (larkway.CardResponse(toast="Saved", toast_type="success", card_json={"header": {}}),
                [larkway.delayed_card_update("", {"done": True})])

    res = testing.run(p, testing.card_action({"action": "approve"}, token="c-1"))
    assert res.outcome == "done"
    assert got == {"value": {"action": "approve"}, "token": "c-1"}
    assert res.card_response == larkway.CardResponse(toast="Saved", toast_type="success", card_json='{"header":{}}')
    assert res.actions == [ActionSummary("delayed_card_update", "", "interactive", '{"done":true}')]
    subs = testing.manifest(p)["subscriptions"]
    assert subs[0]["event_types"] == ["card.action.trigger", "card.action.trigger_v1"]


@pytest.mark.parametrize("ret,toast,n_actions", [
    (larkway.CardResponse(toast="only toast"), "only toast", 0),
    ([larkway.reply_text("x")], "", 1),
    (None, "", 0),
    ((None, larkway.reply_text("x")), "", 1),
])
def test_card_handler_return_forms(ret, toast, n_actions):
    p = larkway.Plugin("cards", "1.0.0")
    p.on_card_action(lambda ev: ret)
    res = testing.run(p, testing.card_action({"a": 1}))
    assert res.outcome == "done"
    assert (res.card_response.toast if res.card_response else "") == toast
    assert len(res.actions) == n_actions


def test_toast_types_on_the_wire():
    for name, want in [("info", pb.TOAST_TYPE_INFO), ("success", pb.TOAST_TYPE_SUCCESS),
                       ("Warning", pb.TOAST_TYPE_WARNING), ("error", pb.TOAST_TYPE_ERROR),
                       ("bogus", pb.TOAST_TYPE_INFO)]:
        assert larkway.CardResponse(toast="t", toast_type=name).to_proto().toast.type == want
    assert not larkway.CardResponse(card_json="{}").to_proto().HasField("toast")
