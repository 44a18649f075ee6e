"""The Handle stream body: malformed input from the core, acks, bounded
concurrency, results matched by delivery_id."""

import asyncio
import json
import threading
import time

import larkway
from larkway._gen import plugin_pb2 as pb
from larkway.testing import _event_proto, message


def run_stream(p, requests, send=None):
    got = []

    async def reqs():
        for r in requests:
            yield r

    async def default_send(resp):
        got.append(resp.result)

    asyncio.run(p._serve_stream(reqs(), send or default_send))
    return got


def delivery(ev, did, deadline=None):
    d = pb.Delivery(delivery_id=did, event=_event_proto(ev), attempt=1)
    return pb.HandleRequest(delivery=d)


def echo_plugin(**kw):
    p = larkway.Plugin("echo", "1.0.0", **kw)
    p.on_message(lambda ev: larkway.reply_text("echo: " + ev.message.text))
    return p


def test_malformed_deliveries_fail_without_crashing():
    p = echo_plugin()
    got = run_stream(p, [
        pb.HandleRequest(delivery=pb.Delivery(delivery_id="no-event")),
        pb.HandleRequest(delivery=pb.Delivery(event=_event_proto(message("no id")))),
        pb.HandleRequest(delivery=pb.Delivery()),
        pb.HandleRequest(),  # neither delivery nor ack: ignored
        delivery(message("fine"), "ok-1"),
    ])
    by_id = {}
    for r in got:
        by_id.setdefault(r.delivery_id, []).append(r)
    assert [r.outcome for r in by_id["no-event"]] == [pb.OUTCOME_FAILED]
    assert by_id["no-event"][0].error == "malformed delivery: missing id or event"
    assert [r.outcome for r in by_id[""]] == [pb.OUTCOME_FAILED, pb.OUTCOME_FAILED]
    assert by_id["ok-1"][0].outcome == pb.OUTCOME_DONE
    assert len(got) == 4


def test_result_acks_are_logged_never_awaited(capsys):
    # The core acks a result only when it refused some of its actions: the
    # results go out whether acks come or not, and only refusals are warned.
    p = echo_plugin()
    got = run_stream(p, [
        delivery(message("one"), "d-1"),
        delivery(message("two"), "d-2"),
        pb.HandleRequest(result_ack=pb.ResultAck(delivery_id="d-1", refused=[
            pb.RefusedAction(index=0, reason="action kind not allowed")])),
        pb.HandleRequest(result_ack=pb.ResultAck(delivery_id="d-2")),
        pb.HandleRequest(result_ack=pb.ResultAck(delivery_id="never-delivered")),
        delivery(message("three"), "d-3"),
    ])
    assert sorted(r.delivery_id for r in got) == ["d-1", "d-2", "d-3"]
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
    warns = [x for x in lines if x["level"] == "WARN"]
    assert len(warns) == 1
    assert warns[0]["msg"] == "core refused actions"
    assert warns[0]["delivery_id"] == "d-1"
    assert warns[0]["reasons"] == ["#0: action kind not allowed"]


def test_concurrency_is_bounded_and_results_match_ids():
    lock = threading.Lock()
    state = {"now": 0, "max": 0}
    p = larkway.Plugin("conc", "1.0.0", max_in_flight=3)

    @p.on_message
    def h(ev):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        # Later deliveries finish first, so results come back out of order.
        time.sleep(0.05 + 0.02 * (10 - int(ev.message.text)))
        with lock:
            state["now"] -= 1
        return larkway.reply_text("n=" + ev.message.text)

    got = run_stream(p, [delivery(message(str(i)), f"d-{i}") for i in range(10)])
    assert len(got) == 10
    for r in got:
        assert json.loads(r.actions[0].reply.content_json)["text"] == "n=" + r.delivery_id[2:]
    assert state["max"] == 3


def test_async_concurrency_is_bounded():
    state = {"now": 0, "max": 0}
    p = larkway.Plugin("conc", "1.0.0", max_in_flight=5)

    @p.on_message
    async def h(ev):
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        await asyncio.sleep(0.02)
        state["now"] -= 1

    got = run_stream(p, [delivery(message(str(i)), f"d-{i}") for i in range(20)])
    assert sorted(r.delivery_id for r in got) == sorted(f"d-{i}" for i in range(20))
    assert state["max"] == 5


def test_a_broken_send_does_not_raise():
    p = echo_plugin()

    async def send(resp):
        raise ConnectionError("stream gone")

    run_stream(p, [delivery(message("a"), "d-1"), delivery(message("b"), "d-2")], send=send)


def test_default_max_in_flight():
    assert echo_plugin()._limit == larkway.DEFAULT_MAX_IN_FLIGHT == 64
    assert echo_plugin(max_in_flight=7)._limit == 7


def test_event_fields_reach_the_handler():
    p = larkway.Plugin("fields", "1.0.0")
    seen = []
    p.on_message(lambda ev: seen.append(ev))
    ev = message("@Bot hi", mentions=["Bot"], chat_id="oc_x", sender="ou_s", thread_id="th_1")
    run_stream(p, [delivery(ev, "d-1")])
    got = seen[0]
    assert got.message.text == "@Bot hi"
    assert got.message.mentions == (larkway.Mention(key="@_user_1", name="Bot",
                                                    id=larkway.User(open_id="ou_mention_1", sender_type="user")),)
    assert json.loads(got.message.content_json) == {"text": "@_user_1 hi"}
    assert (got.chat_id, got.sender.open_id, got.message.thread_id) == ("oc_x", "ou_s", "th_1")
    assert got.delivery_id == "d-1" and got.attempt == 1
    assert got.raw_json()["header"]["event_type"] == "im.message.receive_v1"
    assert got.create_time is not None
