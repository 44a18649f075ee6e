"""The state store: the API and test kit in-process, and the plugin side of
go-plugin's broker in a real plugin process, with a Python host playing the
core (its StartStream, a StateService behind TLS with a P-521 certificate as
go-plugin's AutoMTLS makes, and Describe's state_broker_id). The Go core
itself is exercised by core/internal/conformance."""

from __future__ import annotations

import importlib.util
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest

import larkway
from larkway import testing
from larkway._broker import Broker, BrokerError, ConnInfo
from larkway._gen import plugin_pb2 as pb
from larkway._gen import plugin_pb2_grpc as pb_grpc
from larkway._gen import state_pb2 as spb
from larkway._gen import state_pb2_grpc as spb_grpc
from larkway._log import Logger
from larkway.testing import _event_proto

# test_serve's launcher pieces (pytest's importlib mode puts no test folder
# on sys.path).
_spec = importlib.util.spec_from_file_location("larkway_test_serve", Path(__file__).with_name("test_serve.py"))
_serve = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_serve)
Launched, host_cert = _serve.Launched, _serve.host_cert

FIXTURE = str(Path(__file__).with_name("fixture_state_plugin.py"))


# ---- the API on the test kit's backend ---------------------------------------

def counter_plugin():
    p = larkway.Plugin("counter", "1.0.0", actions=[larkway.ActionKind.REPLY])

    @p.on_command("/count")
    def count(ev, cmd):
        e = p.state.get("n")
        n = int(e.value) + 1 if e else 1
        swapped, _ = p.state.compare_and_swap("n", e.revision if e else 0, str(n))
        assert swapped
        return larkway.reply_text(f"count: {n}")

    @p.on_command("/acount")
    async def acount(ev, cmd):
        e = await p.state.aget("n")
        n = int(e.value) + 1 if e else 1
        swapped, _ = await p.state.acompare_and_swap("n", e.revision if e else 0, str(n))
        assert swapped
        return larkway.reply_text(f"count: {n}")
    return p


def test_memory_state_semantics():
    m = testing.MemoryState()
    st = larkway.Plugin("x", "1.0.0")
    st.set_state_backend(m)
    s = st.state
    assert s.get("k") is None
    assert s.compare_and_swap("k", 5, "v") == (False, 0)
    ok, r1 = s.compare_and_swap("k", 0, "v1")
    assert ok and r1 > 0
    assert s.compare_and_swap("k", 0, "v2") == (False, r1)
    assert s.get("k") == larkway.Entry(b"v1", r1)
    r2 = s.set("k", b"\x00bytes", ttl=30)
    assert r2 > r1 and s.get("k").value == b"\x00bytes"
    ok, r3 = s.compare_and_swap("k", r2, bytearray(b"v3"))
    assert ok and r3 > r2 and s.get("k").text() == "v3"
    assert s.delete("k") is True and s.delete("k") is False
    assert m.data == {}
    with pytest.raises(TypeError):
        s.set("k", 42)


def test_sync_and_async_handlers_use_the_store():
    p = counter_plugin()
    p.set_state_backend(testing.MemoryState())
    assert testing.run(p, testing.message("/count")).texts == ["count: 1"]
    assert testing.run(p, testing.message("/acount")).texts == ["count: 2"]
    assert testing.run(p, testing.message("/count")).texts == ["count: 3"]


def test_without_a_store_the_delivery_is_retried_with_a_clear_error():
    res = testing.run(counter_plugin(), testing.message("/count"))
    assert res.outcome == "retry"
    assert "StateUnavailable" in res.error and "no state store available" in res.error
    with pytest.raises(larkway.StateUnavailable):
        larkway.Plugin("x", "1.0.0").state.get("k")


def test_calls_are_bounded_by_the_delivery_deadline():
    seen = []

    class Slow(testing.MemoryState):
        def get(self, key, timeout=None):
            seen.append(timeout)
            return None
    p = larkway.Plugin("x", "1.0.0")

    @p.on_message
    def h(ev):
        p.state.get("a")
        p.state.get("b", timeout=0.5)
        p.state.get("c", timeout=60)
    p.set_state_backend(Slow())
    assert testing.run(p, testing.message("hi"), deadline=3.0).outcome == "done"
    assert 2.0 < seen[0] <= 3.0 and seen[1] == 0.5 and 2.0 < seen[2] <= 3.0


# ---- the broker ---------------------------------------------------------------

def test_conn_info_wire_format():
    # go-plugin's ConnInfo: service_id=1 (varint), network=2, address=3, knock=4.
    b = ConnInfo(service_id=7, network="unix", address="/tmp/plugin1").SerializeToString()
    assert b == b"\x08\x07\x12\x04unix\x1a\x0c/tmp/plugin1"
    k = ConnInfo.FromString(b"\x08\x01\x22\x02\x08\x01")
    assert k.service_id == 1 and k.HasField("knock") and k.knock.knock and not k.knock.ack


def test_dial_waits_for_the_conn_info_and_keeps_it():
    b = Broker(Logger())
    threading.Timer(0.2, b.offer, args=(3, "tcp", "127.0.0.1:1")).start()
    assert b.conn_info(3, timeout=5) == ("tcp", "127.0.0.1:1")
    time.sleep(0.1)
    assert b.conn_info(3, timeout=0.1) == ("tcp", "127.0.0.1:1")  # still there: no 5 s expiry
    with pytest.raises(BrokerError, match="timeout waiting for connection info"):
        b.conn_info(4, timeout=0.1)
    b.close()
    with pytest.raises(BrokerError):
        b.conn_info(4, timeout=5)


class _Store(spb_grpc.StateServiceServicer):
    """The core's StateService, in memory, recording the TTLs it got."""

    def __init__(self):
        self.mem = testing.MemoryState()
        self.ttls = []

    def Get(self, req, ctx):
        e = self.mem.get(req.key)
        return spb.GetResponse(found=e is not None, value=e.value if e else b"", revision=e.revision if e else 0)

    def Set(self, req, ctx):
        self.ttls.append(req.ttl.seconds)
        return spb.SetResponse(revision=self.mem.set(req.key, req.value))

    def CompareAndSwap(self, req, ctx):
        self.ttls.append(req.ttl.seconds)
        ok, rev = self.mem.compare_and_swap(req.key, req.expected_revision, req.value)
        return spb.CompareAndSwapResponse(swapped=ok, revision=rev)

    def Delete(self, req, ctx):
        return spb.DeleteResponse(deleted=self.mem.delete(req.key))


class Host:
    """Plays the core for one plugin process: launches it, serves the state
    store on a Unix socket (TLS with the host certificate when mtls),
    announces it on StartStream, and drives Describe and Handle."""

    def __init__(self, mtls: bool, announce: bool = True):
        self.tmp = tempfile.mkdtemp(prefix="lwh-", dir="/tmp")
        env = dict(os.environ)
        env.update({larkway.contract.MAGIC_COOKIE_KEY: larkway.contract.MAGIC_COOKIE_VALUE,
                    "PLUGIN_MIN_PORT": "10000", "PLUGIN_MAX_PORT": "25000", "PLUGIN_PROTOCOL_VERSIONS": "1"})
        env.pop("PLUGIN_CLIENT_CERT", None)
        cert = key = None
        if mtls:
            cert, key = host_cert()
            env["PLUGIN_CLIENT_CERT"] = cert.decode()
        proc = subprocess.Popen([sys.executable, FIXTURE], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env, text=True)
        line = proc.stdout.readline().strip()
        if not line:
            proc.kill()
            pytest.fail("no handshake line: " + proc.stderr.read())
        self.plugin = Launched(proc, line, cert, key)
        self.channel = self.plugin.channel()

        self.store = _Store()
        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        spb_grpc.add_StateServiceServicer_to_server(self.store, self.server)
        self.sock = os.path.join(self.tmp, "state.sock")
        if mtls:
            creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=self.plugin.server_cert_pem(),
                                                require_client_auth=True)
            self.server.add_secure_port("unix:" + self.sock, creds)
        else:
            self.server.add_insecure_port("unix:" + self.sock)
        self.server.start()

        self.broker_q: queue.Queue = queue.Queue()
        start_stream = self.channel.stream_stream("/plugin.GRPCBroker/StartStream",
                                                  request_serializer=ConnInfo.SerializeToString,
                                                  response_deserializer=ConnInfo.FromString)

        def reqs():
            while (m := self.broker_q.get()) is not None:
                yield m
        self.broker_stream = start_stream(reqs())
        if announce:
            self.broker_q.put(ConnInfo(service_id=1, network="unix", address=self.sock))
        stub = pb_grpc.PluginServiceStub(self.channel)
        stub.Describe(pb.DescribeRequest(core_contract_version="v1", state_broker_id=1), timeout=5)
        self.stub = stub

    def handle(self, *texts: str, chat: str = "oc_state") -> list[pb.Result]:
        reqs = []
        for i, t in enumerate(texts):
            d = pb.Delivery(delivery_id=f"d-{i}", event=_event_proto(testing.message(t, chat_id=chat)), attempt=1)
            d.deadline.FromSeconds(int(time.time() + 20))
            reqs.append(pb.HandleRequest(delivery=d))
        out = {}
        # One at a time, as the core does within a chat.
        for r in reqs:
            for resp in self.stub.Handle(iter([r]), timeout=30):
                out[resp.result.delivery_id] = resp.result
        return [out[f"d-{i}"] for i in range(len(texts))]

    def close(self):
        self.broker_q.put(None)
        self.plugin.stop()
        self.server.stop(0)


@pytest.fixture
def host():
    hosts = []

    def start(**kw):
        h = Host(**kw)
        hosts.append(h)
        return h
    yield start
    for h in hosts:
        h.close()


def texts(results):
    out = []
    for r in results:
        assert r.outcome == pb.OUTCOME_DONE, r.error
        out.append(r.actions[0].reply.content_json)
    return out


@pytest.mark.parametrize("mtls", [True, False], ids=["automtls", "plaintext"])
def test_state_round_trip_through_the_broker(host, mtls):
    h = host(mtls=mtls)
    assert texts(h.handle("/count", "/acount", "/count")) == [
        '{"text":"count: 1"}', '{"text":"count: 2"}', '{"text":"count: 3"}']
    assert h.store.mem.data["count:oc_state"] == b"3"
    assert 60 in h.store.ttls and 0 in h.store.ttls  # ttl=60 sent; None means the store's default
    assert texts(h.handle("/reset")) == ['{"text":"reset: existed=True rev=True"}']
    assert "count:oc_state" not in h.store.mem.data
    assert texts(h.handle("/count")) == ['{"text":"count: 1"}']


def test_first_use_long_after_describe(host):
    # go-plugin's own plugin side forgets a ConnInfo 5 s after it arrives;
    # this SDK keeps it, so a first state call much later still connects.
    h = host(mtls=True)
    time.sleep(6)
    assert texts(h.handle("/count")) == ['{"text":"count: 1"}']


def test_no_conn_info_means_retry_with_a_clear_error(host):
    h = host(mtls=True, announce=False)
    t0 = time.monotonic()
    [r] = h.handle("/count")
    assert r.outcome == pb.OUTCOME_RETRY
    assert "connecting to the state store" in r.error and "timeout waiting for connection info" in r.error
    assert time.monotonic() - t0 < 15
