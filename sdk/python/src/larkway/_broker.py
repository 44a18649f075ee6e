"""The plugin side of hashicorp/go-plugin's gRPC broker (v1.8, grpc_broker.go).

go-plugin lets the two processes open more gRPC connections to each other by
numeric id. The host (the larkway core) calls the plugin's
``plugin.GRPCBroker/StartStream``, a bidirectional stream of ``ConnInfo``
messages (internal/plugin/grpc_broker.proto). To serve something to the
plugin, the host listens on a fresh socket (a Unix socket, or TCP on
Windows), and sends ``ConnInfo{service_id, network, address}`` down the
stream (``GRPCBroker.AcceptAndServe``); the plugin's ``Dial(id)`` waits for
that ConnInfo and dials the address — with AutoMTLS over TLS, presenting the
plugin's own certificate (the one in the handshake line, which the host
trusts as its only client CA) and verifying the host's certificate (the one
in PLUGIN_CLIENT_CERT) for the server name "localhost".

The larkway core serves ``larkway.plugin.v1.StateService`` this way and
names its id in ``DescribeRequest.state_broker_id``.

Differences from Go's plugin side, on purpose: a ConnInfo is kept until the
plugin dials it (Go forgets it after 5 s, so a first dial later than that
times out), and the plugin never accepts connections itself, so it sends
nothing on the stream. Multiplexing (``PLUGIN_MULTIPLEX_GRPC``) is declined
in the handshake, so knocks do not occur; any that arrive are ignored.
"""

from __future__ import annotations

import os
import ssl
import threading
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from ._log import Logger
from ._tlsfront import TLSDialRelay

#: How long dial waits for the host's ConnInfo (go-plugin's Dial waits 5 s).
DIAL_TIMEOUT = 10.0


def _conn_info_class() -> Any:
    # go-plugin's message, described at runtime rather than generated: the
    # contract's generated code (larkway._gen) holds only larkway's protos.
    #   message ConnInfo { uint32 service_id = 1; string network = 2; string address = 3;
    #                      message Knock { bool knock = 1; bool ack = 2; string error = 3; } Knock knock = 4; }
    f = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(name="larkway/_goplugin/grpc_broker.proto", package="plugin",
                                            syntax="proto3")
    m = fd.message_type.add(name="ConnInfo")
    for name, num, typ in (("service_id", 1, f.TYPE_UINT32), ("network", 2, f.TYPE_STRING),
                           ("address", 3, f.TYPE_STRING)):
        m.field.add(name=name, number=num, type=typ, label=f.LABEL_OPTIONAL, json_name=_camel(name))
    m.field.add(name="knock", number=4, type=f.TYPE_MESSAGE, label=f.LABEL_OPTIONAL,
                type_name=".plugin.ConnInfo.Knock", json_name="knock")
    k = m.nested_type.add(name="Knock")
    for name, num, typ in (("knock", 1, f.TYPE_BOOL), ("ack", 2, f.TYPE_BOOL), ("error", 3, f.TYPE_STRING)):
        k.field.add(name=name, number=num, type=typ, label=f.LABEL_OPTIONAL, json_name=name)
    pool = descriptor_pool.DescriptorPool()  # private: no clash with anything registered globally
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("plugin.ConnInfo"))


def _camel(s: str) -> str:
    head, *rest = s.split("_")
    return head + "".join(w.title() for w in rest)


ConnInfo = _conn_info_class()


class BrokerError(Exception):
    """A brokered connection could not be made."""


class Broker:
    """Receives the host's ConnInfo messages and dials brokered connections.

    ``handler()`` is registered on the plugin's gRPC server; ``dial(id)`` may
    be called from any thread.
    """

    def __init__(self, log: Logger, tls: ssl.SSLContext | None = None, private_dir: str = "") -> None:
        self.log = log
        self.tls = tls
        self.private_dir = private_dir
        self._cond = threading.Condition()
        self._infos: dict[int, tuple[str, str]] = {}
        self._relays: list[TLSDialRelay] = []
        self._closed = False

    # ---- the stream -------------------------------------------------

    def handler(self) -> grpc.GenericRpcHandler:
        """go-plugin's ``plugin.GRPCBroker`` service, for a grpc.aio server."""
        async def start_stream(requests: Any, _context: Any) -> None:
            async for info in requests:
                if info.HasField("knock"):
                    self.log.debug("ignoring a broker knock (multiplexing is off)", service_id=info.service_id)
                    continue
                self.offer(info.service_id, info.network, info.address)

        return grpc.method_handlers_generic_handler("plugin.GRPCBroker", {
            "StartStream": grpc.stream_stream_rpc_method_handler(
                start_stream, request_deserializer=ConnInfo.FromString,
                response_serializer=ConnInfo.SerializeToString),
        })

    def offer(self, service_id: int, network: str, address: str) -> None:
        """Record where the host serves service_id (what a ConnInfo says)."""
        self.log.debug("broker connection offered", service_id=service_id, network=network, address=address)
        with self._cond:
            self._infos[service_id] = (network, address)
            self._cond.notify_all()

    # ---- dialing ----------------------------------------------------

    def conn_info(self, service_id: int, timeout: float = DIAL_TIMEOUT) -> tuple[str, str]:
        """Wait for the host's ConnInfo for service_id: ``(network, address)``."""
        with self._cond:
            if not self._cond.wait_for(lambda: service_id in self._infos or self._closed, timeout):
                raise BrokerError(f"timeout waiting for connection info for broker id {service_id}")
            if self._closed:
                raise BrokerError("the plugin is shutting down")
            return self._infos[service_id]

    def dial(self, service_id: int, timeout: float = DIAL_TIMEOUT,
             options: list[tuple[str, Any]] | None = None) -> grpc.Channel:
        """A (synchronous) gRPC channel to what the host serves on service_id."""
        network, address = self.conn_info(service_id, timeout)
        if network not in ("unix", "tcp"):
            raise BrokerError(f"unknown address type {network!r} for broker id {service_id}")
        if self.tls is None:
            # No AutoMTLS: plaintext gRPC straight to the host's socket.
            target = "unix:" + address if network == "unix" else address
            return grpc.insecure_channel(target, options=options)
        path = os.path.join(self.private_dir, f"broker-{service_id}-{len(self._relays)}.sock")
        relay = TLSDialRelay(network, address, self.tls, path, self.log)
        try:
            relay.start()
        except (OSError, RuntimeError) as e:
            raise BrokerError(f"relaying broker id {service_id}: {e}") from e
        with self._cond:
            if self._closed:
                relay.close()
                raise BrokerError("the plugin is shutting down")
            self._relays.append(relay)
        # grpcio speaks plaintext HTTP/2 to the relay, which does the TLS;
        # the authority is the name the host's certificate carries.
        opts = [("grpc.default_authority", "localhost")] + list(options or [])
        return grpc.insecure_channel("unix:" + path, options=opts)

    def close(self) -> None:
        """Stop every relay and fail waiting dials; idempotent."""
        with self._cond:
            self._closed = True
            relays, self._relays = self._relays, []
            self._cond.notify_all()
        for r in relays:
            r.close()
