"""The plugin process as go-plugin's host sees it: magic cookie, handshake
line, AutoMTLS with a P-521 host certificate (as go-plugin generates it),
health, Describe, Handle, Shutdown and SIGTERM. A Python gRPC client plays the
host; the Go host itself was exercised by hand (see sdk/python/README.md)."""

from __future__ import annotations

import base64
import datetime
import os
import queue
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from larkway import contract
from larkway._gen import plugin_pb2 as pb
from larkway._gen import plugin_pb2_grpc as pb_grpc
from larkway.testing import _event_proto, message

FIXTURE = str(Path(__file__).with_name("fixture_plugin.py"))


def host_cert() -> tuple[bytes, bytes]:
    """A client certificate like go-plugin's generateCert: ECDSA P-521,
    self-signed CA for localhost, client and server auth."""
    key = ec.generate_private_key(ec.SECP521R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "HashiCorp")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(seconds=30)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA512()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption()))


class Launched:
    def __init__(self, proc: subprocess.Popen, line: str, client_cert: bytes | None, client_key: bytes | None):
        self.proc = proc
        self.line = line
        self.fields = line.split("|")
        self.client_cert, self.client_key = client_cert, client_key
        self.stderr: list[str] = []
        self.stdout_rest: list[str] = []
        threading.Thread(target=self._drain, args=(proc.stderr, self.stderr), daemon=True).start()
        threading.Thread(target=self._drain, args=(proc.stdout, self.stdout_rest), daemon=True).start()

    @staticmethod
    def _drain(f, out):
        for line in iter(f.readline, ""):
            out.append(line)

    @property
    def addr(self) -> str:
        return self.fields[3]

    def server_cert_pem(self) -> bytes:
        field = self.fields[5]
        der = base64.b64decode(field + "=" * (-len(field) % 4))
        return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)

    def channel(self, with_client_cert: bool = True) -> grpc.Channel:
        if self.client_cert is None:
            return grpc.insecure_channel(self.addr)
        creds = grpc.ssl_channel_credentials(
            root_certificates=self.server_cert_pem(),
            private_key=self.client_key if with_client_cert else None,
            certificate_chain=self.client_cert if with_client_cert else None)
        return grpc.secure_channel(self.addr, creds, options=[("grpc.ssl_target_name_override", "localhost")])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def launch(mtls: bool = True, env: dict | None = None) -> Launched:
    e = dict(os.environ)
    e.update({contract.MAGIC_COOKIE_KEY: contract.MAGIC_COOKIE_VALUE, "PLUGIN_MIN_PORT": "10000",
              "PLUGIN_MAX_PORT": "25000", "PLUGIN_PROTOCOL_VERSIONS": "1"})
    e.pop("PLUGIN_CLIENT_CERT", None)
    cert = key = None
    if mtls:
        cert, key = host_cert()
        e["PLUGIN_CLIENT_CERT"] = cert.decode()
    e.update(env or {})
    proc = subprocess.Popen([sys.executable, FIXTURE], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=e, text=True)
    timer = threading.Timer(20, proc.kill)
    timer.start()
    try:
        line = proc.stdout.readline().strip()
    finally:
        timer.cancel()
    if not line:
        err = proc.stderr.read()
        proc.kill()
        pytest.fail(f"no handshake line; stderr:\n{err}")
    return Launched(proc, line, cert, key)


@pytest.fixture
def plugin():
    launched = []

    def start(**kw):
        p = launch(**kw)
        launched.append(p)
        return p
    yield start
    for p in launched:
        p.stop()


def shutdown(ch: grpc.Channel) -> None:
    ch.unary_unary("/plugin.GRPCController/Shutdown", request_serializer=lambda m: m,
                   response_deserializer=lambda b: b)(b"", timeout=5)


def deliveries(*texts, deadline_s=10.0):
    out = []
    for i, t in enumerate(texts):
        d = pb.Delivery(delivery_id=f"d-{i}", event=_event_proto(message(t)), attempt=1)
        d.deadline.FromSeconds(int(time.time() + deadline_s))
        out.append(pb.HandleRequest(delivery=d))
    return out


def test_refuses_to_run_without_the_magic_cookie():
    e = {k: v for k, v in os.environ.items() if k != contract.MAGIC_COOKIE_KEY}
    r = subprocess.run([sys.executable, FIXTURE], env=e, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stdout == ""
    assert "is a larkway plugin: it is started by the larkway core" in r.stderr


def test_handshake_mtls_rpcs_and_shutdown(plugin):
    p = plugin()
    f = p.fields
    assert f[:3] == ["1", "1", "tcp"] and f[4] == "grpc" and len(f) == 6
    host, port = f[3].rsplit(":", 1)
    assert host == "127.0.0.1" and 10000 <= int(port) <= 25000
    # Sixth field: DER in unpadded standard base64 (Go's RawStdEncoding).
    assert "=" not in f[5] and "-" not in f[5] and "_" not in f[5]
    cert = x509.load_pem_x509_certificate(p.server_cert_pem())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)

    ch = p.channel()
    status = health_pb2_grpc.HealthStub(ch).Check(
        health_pb2.HealthCheckRequest(service=contract.HEALTH_SERVICE_NAME), timeout=5).status
    assert status == health_pb2.HealthCheckResponse.SERVING

    stub = pb_grpc.PluginServiceStub(ch)
    m = stub.Describe(pb.DescribeRequest(core_contract_version="v1"), timeout=5).manifest
    assert (m.name, m.version, list(m.allowed_actions)) == ("fixture", "0.1.0", [pb.ACTION_KIND_REPLY])

    results = {r.result.delivery_id: r.result for r in stub.Handle(iter(deliveries("a", "b", "c")), timeout=10)}
    assert sorted(results) == ["d-0", "d-1", "d-2"]
    assert all(r.outcome == pb.OUTCOME_DONE for r in results.values())
    assert results["d-1"].actions[0].reply.content_json == '{"text":"echo: b"}'

    t0 = time.monotonic()
    shutdown(ch)
    assert p.proc.wait(timeout=5) == 0
    assert time.monotonic() - t0 < 2.0  # go-plugin kills after 2 s
    time.sleep(0.1)
    # print() after the handshake goes to stderr, never to the host's stdout.
    assert p.stdout_rest == []
    assert any("printed after the handshake" in x for x in p.stderr)


def test_mtls_is_required(plugin):
    p = plugin()
    ch = p.channel(with_client_cert=False)
    with pytest.raises(grpc.RpcError) as e:
        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="plugin"), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_shutdown_drains_deliveries_in_flight(plugin):
    p = plugin()
    ch = p.channel()
    stub = pb_grpc.PluginServiceStub(ch)
    q: queue.Queue = queue.Queue()

    def reqs():
        while (r := q.get()) is not None:
            yield r
    got: list = []
    stream = stub.Handle(reqs(), timeout=10)
    reader = threading.Thread(target=lambda: got.extend(x.result for x in stream_iter(stream)), daemon=True)
    reader.start()
    q.put(deliveries("sleep 0.5")[0])
    time.sleep(0.2)  # in flight now
    shutdown(ch)
    assert p.proc.wait(timeout=5) == 0
    reader.join(timeout=5)
    q.put(None)
    assert [(r.delivery_id, r.outcome) for r in got] == [("d-0", pb.OUTCOME_DONE)]


def stream_iter(stream):
    try:
        yield from stream
    except grpc.RpcError:
        return


def test_insecure_without_automtls_and_sigterm(plugin):
    p = plugin(mtls=False)
    assert p.fields[5] == ""
    stub = pb_grpc.PluginServiceStub(p.channel())
    assert stub.Describe(pb.DescribeRequest(), timeout=5).manifest.name == "fixture"
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(timeout=5) == 0
    time.sleep(0.1)
    assert any('"reason": "SIGTERM"' in x for x in p.stderr)


def test_port_range_is_honoured(plugin):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        p = plugin(env={"PLUGIN_MIN_PORT": str(taken), "PLUGIN_MAX_PORT": str(taken + 20)})
        port = int(p.addr.rsplit(":", 1)[1])
        assert taken < port <= taken + 20


def test_broker_multiplexing_is_declined(plugin):
    p = plugin(env={"PLUGIN_MULTIPLEX_GRPC": "true"})
    assert len(p.fields) == 7 and p.fields[6] == "false"


def handle_batch(stub, n):
    ds = [x.delivery for x in deliveries(*[f"t{i}" for i in range(n)])]
    got = []
    for resp in stub.Handle(iter([pb.HandleRequest(deliveries=pb.DeliveryBatch(deliveries=ds))]), timeout=10):
        kind = resp.WhichOneof("kind")
        got.extend((kind, r) for r in (resp.results.results if kind == "results" else [resp.result]))
    return got


def test_batches_over_grpc_follow_describe(plugin):
    p = plugin()
    stub = pb_grpc.PluginServiceStub(p.channel())
    m = stub.Describe(pb.DescribeRequest(core_contract_version="v1", accepts_result_batches=True), timeout=5).manifest
    assert m.accepts_delivery_batches
    got = handle_batch(stub, 20)
    assert sorted(r.delivery_id for _, r in got) == sorted(f"d-{i}" for i in range(20))
    assert all(r.outcome == pb.OUTCOME_DONE for _, r in got)
    # A core that predates result batches gets one result per message.
    stub.Describe(pb.DescribeRequest(core_contract_version="v1"), timeout=5)
    got = handle_batch(stub, 20)
    assert {k for k, _ in got} == {"result"} and len(got) == 20


def test_tls_relay_carries_large_messages_and_ends_with_the_client(plugin):
    # 3 MiB each way crosses the relay in many TLS records and partial sends.
    p = plugin()
    stub = pb_grpc.PluginServiceStub(p.channel())
    big = "x" * (3 << 20)
    d = deliveries(big)[0]
    (resp,) = list(stub.Handle(iter([d]), timeout=20))
    assert resp.result.outcome == pb.OUTCOME_DONE
    assert len(resp.result.actions[0].reply.content_json) > 3 << 20
    # A raw TLS client that says close_notify and leaves must not leave the
    # relay busy: the plugin still answers at once.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=p.server_cert_pem().decode())
    with tempfile.TemporaryDirectory() as tmp:
        cp, kp = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
        Path(cp).write_bytes(p.client_cert)
        Path(kp).write_bytes(p.client_key)
        ctx.load_cert_chain(cp, kp)
    ctx.set_alpn_protocols(["h2"])
    host, port = p.addr.rsplit(":", 1)
    for _ in range(3):
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            tls = ctx.wrap_socket(raw, server_hostname="localhost")
            try:
                tls.unwrap()  # sends close_notify; the relay just hangs up
            except (ssl.SSLError, OSError):
                pass
    t0 = time.monotonic()
    assert stub.Describe(pb.DescribeRequest(), timeout=5).manifest.name == "fixture"
    assert time.monotonic() - t0 < 1
    # CPU used since: a spinning relay would burn it.
    cpu0 = _cpu(p.proc.pid)
    time.sleep(0.3)
    assert _cpu(p.proc.pid) - cpu0 < 0.15


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
