"""Delivery and result batches (contract v1, negotiated): DeliveryBatch in,
ResultBatch out only to a core that accepts them, single deliveries still
handled."""

import asyncio
import dataclasses
import threading
import time

import larkway
from larkway import testing
from larkway._event import CardAction, Event, Message, User, event_from_proto
from larkway._gen import plugin_pb2 as pb
from larkway.testing import _event_proto, message


def d(text, did, deadline_s=10.0):
    out = pb.Delivery(delivery_id=did, event=_event_proto(message(text)), attempt=1)
    if deadline_s is not None:
        out.deadline.FromNanoseconds(int((time.time() + deadline_s) * 1e9))
    return out


def batch(*ds):
    return pb.HandleRequest(deliveries=pb.DeliveryBatch(deliveries=ds))


def single(x):
    return pb.HandleRequest(delivery=x)


def serve(p, requests, result_batches):
    """Run requests through the stream; return the responses as sent."""
    sent = []

    async def reqs():
        for r in requests:
            yield r

    async def send(resp):
        sent.append(resp)

    asyncio.run(p._serve_stream(reqs(), send, result_batches=result_batches))
    return sent


def results(sent):
    out = []
    for m in sent:
        if m.WhichOneof("kind") == "results":
            out.extend(m.results.results)
        else:
            out.append(m.result)
    return out


def gate_plugin(n):
    """An async handler that returns only once n deliveries have started, so
    their results are all ready at the same moment."""
    p = larkway.Plugin("gate", "1.0.0", actions=[larkway.ActionKind.REPLY])
    state = {"started": 0}
    gate = {}

    @p.on_message
    async def h(ev):
        if "ev" not in gate:
            gate["ev"] = asyncio.Event()
        state["started"] += 1
        if state["started"] == n:
            gate["ev"].set()
        await gate["ev"].wait()
        return larkway.reply_text("re: " + ev.message.text)

    return p


def test_manifest_accepts_delivery_batches():
    p = larkway.Plugin("m", "1.0.0")
    assert p.manifest_proto().accepts_delivery_batches is True
    assert testing.manifest(p)["accepts_delivery_batches"] is True


def test_batch_in_batch_out():
    p = gate_plugin(5)
    sent = serve(p, [batch(*[d(str(i), f"d-{i}") for i in range(5)])], result_batches=True)
    got = results(sent)
    assert sorted(r.delivery_id for r in got) == [f"d-{i}" for i in range(5)]
    for r in got:
        assert r.outcome == pb.OUTCOME_DONE
        assert r.actions[0].reply.content_json == '{"text":"re: %s"}' % r.delivery_id[2:]
    # Ready together, so they leave together: one ResultBatch.
    assert [m.WhichOneof("kind") for m in sent] == ["results"]


def test_a_core_without_result_batches_gets_single_results():
    p = gate_plugin(5)
    sent = serve(p, [batch(*[d(str(i), f"d-{i}") for i in range(5)])], result_batches=False)
    assert [m.WhichOneof("kind") for m in sent] == ["result"] * 5
    assert sorted(r.delivery_id for r in results(sent)) == [f"d-{i}" for i in range(5)]


def test_single_deliveries_still_work_alongside_batches():
    p = larkway.Plugin("mix", "1.0.0", actions=[larkway.ActionKind.REPLY])
    p.on_message(lambda ev: larkway.reply_text(ev.message.text))
    sent = serve(p, [single(d("a", "s-1")), batch(d("b", "b-1"), d("c", "b-2")), single(d("d", "s-2")),
                     pb.HandleRequest(deliveries=pb.DeliveryBatch())],  # an empty batch: nothing to do
                 result_batches=True)
    got = {r.delivery_id: r for r in results(sent)}
    assert sorted(got) == ["b-1", "b-2", "s-1", "s-2"]
    assert all(r.outcome == pb.OUTCOME_DONE for r in got.values())
    assert len(results(sent)) == 4


def test_each_delivery_in_a_batch_is_handled_as_if_alone():
    # Own deadline, own outcome, malformed ones answered, results by id.
    p = larkway.Plugin("each", "1.0.0", actions=[larkway.ActionKind.REPLY])

    @p.on_message
    async def h(ev):
        if ev.message.text == "slow":
            await asyncio.sleep(5)
        if ev.message.text == "boom":
            raise ValueError("boom")
        if ev.message.text == "perm":
            raise larkway.Permanent("no")
        return larkway.reply_text("ok")

    t0 = time.monotonic()
    sent = serve(p, [batch(d("slow", "slow", deadline_s=0.2), d("boom", "boom"), d("perm", "perm"),
                           d("fine", "fine"), d("late", "late", deadline_s=-1),
                           pb.Delivery(delivery_id="no-event"))], result_batches=True)
    assert time.monotonic() - t0 < 3
    got = {r.delivery_id: (r.outcome, r.error) for r in results(sent)}
    assert got == {
        "slow": (pb.OUTCOME_RETRY, "deadline exceeded"),
        "boom": (pb.OUTCOME_RETRY, "ValueError: boom"),
        "perm": (pb.OUTCOME_FAILED, "no"),
        "fine": (pb.OUTCOME_DONE, ""),
        "late": (pb.OUTCOME_RETRY, "deadline exceeded before the handler started"),
        "no-event": (pb.OUTCOME_FAILED, "malformed delivery: missing id or event"),
    }


def test_a_batch_larger_than_max_in_flight_waits_for_slots():
    lock = threading.Lock()
    state = {"now": 0, "max": 0}
    p = larkway.Plugin("bounded", "1.0.0", max_in_flight=2)

    @p.on_message
    def h(ev):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.02)
        with lock:
            state["now"] -= 1

    sent = serve(p, [batch(*[d(str(i), f"d-{i}") for i in range(8)])], result_batches=True)
    assert sorted(r.delivery_id for r in results(sent)) == sorted(f"d-{i}" for i in range(8))
    assert state["max"] == 2


def test_sync_handlers_in_a_batch_run_concurrently():
    # Every handler of the batch must be running at once for the barrier to
    # open: sync handlers get their own threads, as with single deliveries.
    barrier = threading.Barrier(4, timeout=5)
    p = larkway.Plugin("threads", "1.0.0")

    @p.on_message
    def h(ev):
        barrier.wait()

    sent = serve(p, [batch(*[d(str(i), f"d-{i}") for i in range(4)])], result_batches=True)
    assert [r.outcome for r in results(sent)] == [pb.OUTCOME_DONE] * 4


def test_result_batches_are_cut_below_the_message_limit(monkeypatch):
    from larkway import _stream
    monkeypatch.setattr(_stream, "BATCH_BYTES", 200)
    p = gate_plugin(6)
    sent = serve(p, [batch(*[d("x" * 40, f"d-{i}") for i in range(6)])], result_batches=True)
    assert len(results(sent)) == 6
    assert len(sent) > 1
    assert all(m.ByteSize() < 400 for m in sent)


def test_the_event_builder_sets_every_field():
    # event_from_proto fills the dataclasses' __dict__ directly: a field added
    # to a dataclass must be added there too.
    ev = event_from_proto(d("hi", "d-1"))
    card = event_from_proto(pb.Delivery(delivery_id="d-2", event=_event_proto(testing.card_action({"a": 1}))))
    for obj, cls in ((ev, Event), (ev.message, Message), (ev.sender, User), (card.card_action, CardAction),
                     (card.card_action.operator, User)):
        assert set(vars(obj)) == {f.name for f in dataclasses.fields(cls)}, cls
    assert ev == dataclasses.replace(ev)  # a real, comparable dataclass
    assert card.card_action.value == {"a": 1}


def test_drain_answers_what_is_still_running_with_retry():
    release = threading.Event()
    p = larkway.Plugin("drain", "1.0.0")

    @p.on_message
    def h(ev):
        if ev.message.text == "stuck":
            release.wait(5)

    sent = []

    async def main():
        q: asyncio.Queue = asyncio.Queue()

        async def reqs():
            while (r := await q.get()) is not None:
                yield r

        async def send(resp):
            sent.append(resp)

        stream = asyncio.ensure_future(p._serve_stream(reqs(), send, result_batches=True))
        q.put_nowait(batch(d("stuck", "stuck"), d("quick", "quick")))
        while len(results(sent)) < 1:  # "quick" answered: both started
            await asyncio.sleep(0.01)
        await p._drain(0.1)
        q.put_nowait(single(d("after", "after")))
        q.put_nowait(None)
        release.set()  # the stream ends once the stuck thread returns
        await asyncio.wait_for(stream, 5)

    asyncio.run(main())
    got = {r.delivery_id: (r.outcome, r.error) for r in results(sent)}
    assert got == {"quick": (pb.OUTCOME_DONE, ""), "stuck": (pb.OUTCOME_RETRY, "plugin is shutting down"),
                   "after": (pb.OUTCOME_RETRY, "plugin is shutting down")}
    assert len(results(sent)) == 3
