"""go-plugin's server side for Python plugins.

The host (the larkway core, hashicorp/go-plugin v1.8) starts the process with
the magic cookie, PLUGIN_MIN_PORT/PLUGIN_MAX_PORT, PLUGIN_PROTOCOL_VERSIONS and,
with AutoMTLS, PLUGIN_CLIENT_CERT (its own self-signed certificate, PEM). The
plugin then

* listens on 127.0.0.1 with a port in [PLUGIN_MIN_PORT, PLUGIN_MAX_PORT],
  serving TLS with a fresh self-signed certificate for "localhost" and
  requiring the host's certificate from its clients (TLS is terminated by
  _tlsfront, in front of the gRPC server: see there why);
* serves PluginService, grpc.health.v1.Health (service "plugin" SERVING),
  go-plugin's plugin.GRPCController (Shutdown) and the plugin side of its
  plugin.GRPCBroker (StartStream: how the core offers the state store, see
  _broker);
* prints one line on stdout and flushes it:
  ``1|1|tcp|127.0.0.1:PORT|grpc|CERT`` where CERT is the DER certificate in
  base64 without padding (Go's RawStdEncoding; empty without AutoMTLS);
* serves until the host calls Shutdown (go-plugin's Kill, then the host waits
  2 s before SIGKILL), SIGTERM, or the host process goes away, draining the
  deliveries in flight first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from . import contract
from ._broker import Broker
from ._gen import plugin_pb2 as pb
from ._gen import plugin_pb2_grpc as pb_grpc
from ._log import JSONHandler, Logger
from ._tlsfront import TLSFront, tls_contexts

if TYPE_CHECKING:
    from ._plugin import Plugin

#: Drain budget after the core's Shutdown call: go-plugin kills the process 2 s
#: after Shutdown returns, so the drain must end well before.
SHUTDOWN_GRACE = 1.5
#: Drain budget after SIGTERM (no one is waiting with a kill).
SIGTERM_GRACE = 10.0
_MAX_MSG = 16 << 20


def main(plugin: Plugin) -> None:
    if os.environ.get(contract.MAGIC_COOKIE_KEY) != contract.MAGIC_COOKIE_VALUE:
        from ._remote import parse_remote_config, serve_remote
        try:
            rc = parse_remote_config(sys.argv[1:], os.environ)
        except ValueError as e:
            sys.stderr.write(f"{e}\n")
            sys.exit(2)
        if rc is not None:
            code = serve_remote(plugin, rc)
            sys.stderr.flush()
            os._exit(code)
        sys.stderr.write(
            f"{plugin.name} is a larkway plugin: it is started by the larkway core, not by hand "
            f"({contract.MAGIC_COOKIE_KEY} is not set; see sdk/python/README.md)\n")
        sys.stderr.flush()
        sys.exit(1)
    code = serve(plugin)
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except Exception:  # noqa: BLE001
            pass
    # Worker threads still stuck in an overrunning sync handler must not keep
    # the process alive past the core's grace period.
    os._exit(code)


def serve(plugin: Plugin) -> int:
    root = logging.getLogger()
    if not any(isinstance(h, JSONHandler) for h in root.handlers):
        root.addHandler(JSONHandler())
        root.setLevel(logging.WARNING)
    # Ctrl-C in a terminal reaches the whole process group: the core drains
    # and stops its plugins itself, so SIGINT must not kill this one first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return asyncio.run(_Server(plugin).run())
    except _StartupError as e:
        plugin.log.error("plugin failed to start", error=str(e))
        return 1


class _StartupError(Exception):
    pass


class _Servicer(pb_grpc.PluginServiceServicer):
    def __init__(self, plugin: Plugin) -> None:
        self.p = plugin

    async def Describe(self, request: pb.DescribeRequest, context: Any) -> pb.DescribeResponse:
        v = request.core_contract_version
        if v and v != contract.CONTRACT_VERSION:
            self.p.log.warn("core speaks another contract version", core_contract_version=v,
                            sdk_contract_version=contract.CONTRACT_VERSION)
        self.p.log.debug("described", core_version=request.core_version, state_broker_id=request.state_broker_id)
        self.p.state._set_broker_id(request.state_broker_id)
        self.p._accepts_result_batches = request.accepts_result_batches
        return pb.DescribeResponse(manifest=self.p.manifest_proto())

    async def Handle(self, request_iterator: Any, context: Any) -> None:
        async def send(resp: pb.HandleResponse) -> None:
            await context.write(resp)
        await self.p._serve_stream(request_iterator, send)


class _Server:
    def __init__(self, plugin: Plugin) -> None:
        self.p = plugin
        self.log: Logger = plugin.log
        self.stop_ev = asyncio.Event()
        self.grace = SHUTDOWN_GRACE
        self.reason = ""

    def request_stop(self, reason: str, grace: float) -> None:
        if self.stop_ev.is_set():
            return
        self.reason, self.grace = reason, grace
        self.stop_ev.set()

    async def run(self) -> int:
        server = grpc.aio.server(options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", _MAX_MSG),
            ("grpc.max_send_message_length", _MAX_MSG),
        ])
        pb_grpc.add_PluginServiceServicer_to_server(_Servicer(self.p), server)
        health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        for svc in (contract.HEALTH_SERVICE_NAME, ""):
            await health.set(svc, health_pb2.HealthCheckResponse.SERVING)

        client_cert = os.environ.get("PLUGIN_CLIENT_CERT", "")
        cert_field = ""
        front: TLSFront | None = None
        private_dir = ""
        lo, hi = _port_range()
        if client_cert:
            # AutoMTLS: TLS is terminated by _tlsfront (see there why not by
            # grpcio); gRPC itself listens on a private Unix socket.
            private_dir = tempfile.mkdtemp(prefix="larkway-")
            if len(private_dir) > 90:  # Unix socket paths are limited to ~107 bytes
                shutil.rmtree(private_dir, ignore_errors=True)
                private_dir = tempfile.mkdtemp(prefix="larkway-", dir="/tmp")
            sock = os.path.join(private_dir, "grpc.sock")
            try:
                server.add_insecure_port("unix:" + sock)
            except RuntimeError as e:
                shutil.rmtree(private_dir, ignore_errors=True)
                raise _StartupError(f"couldn't listen on {sock}: {e}") from None
            try:
                ctx, client_ctx, cert_field = tls_contexts(client_cert, private_dir)
            except (ssl.SSLError, ValueError) as e:
                shutil.rmtree(private_dir, ignore_errors=True)
                raise _StartupError(f"PLUGIN_CLIENT_CERT is not a usable certificate: {e}") from None
            broker = Broker(self.log, client_ctx, private_dir)
            server.add_generic_rpc_handlers((self._controller(), broker.handler()))
            await server.start()
            front = TLSFront(sock, ctx, self.log)
            port = await front.listen(range(lo, hi + 1))
            if port is None:
                await server.stop(0)
                shutil.rmtree(private_dir, ignore_errors=True)
                raise _StartupError(f"couldn't bind plugin TCP listener in 127.0.0.1:{lo}..{hi}")
        else:
            broker = Broker(self.log)
            server.add_generic_rpc_handlers((self._controller(), broker.handler()))
            port = _bind(server, lo, hi)
            await server.start()
        self.p.state._set_broker(broker)

        line = (f"{contract.CORE_PROTOCOL_VERSION}|{contract.PROTOCOL_VERSION}|tcp|127.0.0.1:{port}|grpc|"
                f"{cert_field}")
        if os.environ.get("PLUGIN_MULTIPLEX_GRPC"):
            line += "|false"  # no gRPC broker multiplexing
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        _stdout_to_stderr()
        self.log.debug("plugin serving", address=f"127.0.0.1:{port}", mtls=front is not None)

        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM", SIGTERM_GRACE)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-POSIX
            pass
        watchdog = asyncio.ensure_future(self._watch_parent())
        await self.stop_ev.wait()
        watchdog.cancel()

        self.log.info("plugin stopping", reason=self.reason)
        await health.enter_graceful_shutdown()
        await self.p._drain(self.grace)
        self.p.state._close()
        broker.close()
        await server.stop(0.2)
        if front is not None:
            await front.close()
        if private_dir:
            shutil.rmtree(private_dir, ignore_errors=True)
        self.log.debug("plugin stopped")
        return 0

    def _controller(self) -> grpc.GenericRpcHandler:
        # go-plugin's plugin.GRPCController (internal/plugin/grpc_controller.proto):
        # Shutdown(Empty) returns (Empty). Both messages are empty, so the
        # wire form is zero bytes and no generated code is needed.
        async def shutdown(_req: bytes, _ctx: Any) -> bytes:
            self.request_stop("shutdown requested by the core", SHUTDOWN_GRACE)
            return b""

        return grpc.method_handlers_generic_handler("plugin.GRPCController", {
            "Shutdown": grpc.unary_unary_rpc_method_handler(
                shutdown, request_deserializer=lambda b: b, response_serializer=lambda _m: b""),
        })

    async def _watch_parent(self) -> None:
        # The host kills plugins on Kill; if it dies without that (SIGKILL,
        # crash), stop rather than linger as an orphan.
        ppid = os.getppid()
        while True:
            await asyncio.sleep(1.0)
            if os.getppid() != ppid:
                self.request_stop("the core went away", SHUTDOWN_GRACE)
                return


def _port_range() -> tuple[int, int]:
    def env(name: str) -> int:
        v = os.environ.get(name, "")
        if not v:
            return 0
        try:
            return int(v)
        except ValueError:
            raise _StartupError(f"couldn't get value from {name}: {v!r}") from None
    lo, hi = env("PLUGIN_MIN_PORT"), env("PLUGIN_MAX_PORT")
    if lo > hi:
        raise _StartupError(f"PLUGIN_MIN_PORT value of {lo} is greater than PLUGIN_MAX_PORT value of {hi}")
    return lo, hi


def _bind(server: Any, lo: int, hi: int) -> int:
    """Bind 127.0.0.1 on the first free port in the host's range (as go-plugin)."""
    for port in range(lo, hi + 1):
        if port:
            # Probe first: a failed gRPC bind is noisy and slow.
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
        try:
            return int(server.add_insecure_port(f"127.0.0.1:{port}"))
        except RuntimeError:
            continue
    raise _StartupError(f"couldn't bind plugin TCP listener in 127.0.0.1:{lo}..{hi}")


def _stdout_to_stderr() -> None:
    # After the handshake go-plugin reads nothing useful from stdout: send
    # print() output to stderr, where the core re-logs it.
    try:
        sys.stdout.flush()
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    except (OSError, ValueError, AttributeError):  # pragma: no cover - unusual stdio
        pass
