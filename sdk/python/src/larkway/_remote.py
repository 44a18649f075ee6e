"""Serving a plugin as its own deployment: gRPC over mutual TLS.

The same plugin the core launches serves remotely when given ``--listen``
(or LARKWAY_LISTEN) with ``--tls-cert``, ``--tls-key`` and ``--client-ca``
(LARKWAY_TLS_CERT, LARKWAY_TLS_KEY, LARKWAY_CLIENT_CA): the core dials it,
presenting a client certificate that must chain to the client CA. The
plugin's certificate must carry the URI SAN ``urn:larkway:plugin:NAME``.
``--state-address`` (LARKWAY_STATE_ADDRESS) is the core's state store for
remote plugins; the core's certificate must name its host.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from . import contract
from ._gen import plugin_pb2_grpc as pb_grpc
from ._log import JSONHandler

if TYPE_CHECKING:
    from ._plugin import Plugin

#: Drain budget after SIGTERM: the core moves the instance's chats on once
#: its health check fails or its stream ends.
DRAIN_GRACE = 20.0
_MAX_MSG = 16 << 20


@dataclass(frozen=True)
class RemoteConfig:
    listen: str
    cert_file: str
    key_file: str
    client_ca_file: str
    state_address: str = ""


def parse_remote_config(args: Sequence[str], env: Mapping[str, str]) -> RemoteConfig | None:
    """The remote-serving flags, each defaulting to its environment
    variable; None when no listen address is given (launched by the core)."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--listen", default=env.get("LARKWAY_LISTEN", ""))
    ap.add_argument("--tls-cert", default=env.get("LARKWAY_TLS_CERT", ""))
    ap.add_argument("--tls-key", default=env.get("LARKWAY_TLS_KEY", ""))
    ap.add_argument("--client-ca", default=env.get("LARKWAY_CLIENT_CA", ""))
    ap.add_argument("--state-address", default=env.get("LARKWAY_STATE_ADDRESS", ""))
    ns, _ = ap.parse_known_args(list(args))
    if not ns.listen:
        return None
    if not (ns.tls_cert and ns.tls_key and ns.client_ca):
        raise ValueError("larkway: serving remotely needs --tls-cert, --tls-key and --client-ca (or LARKWAY_TLS_CERT, "
                         "LARKWAY_TLS_KEY, LARKWAY_CLIENT_CA): plugins serve only mutual TLS")
    return RemoteConfig(ns.listen, ns.tls_cert, ns.tls_key, ns.client_ca, ns.state_address)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def serve_remote(plugin: Plugin, rc: RemoteConfig) -> int:
    root = logging.getLogger()
    if not any(isinstance(h, JSONHandler) for h in root.handlers):
        root.addHandler(JSONHandler())
        root.setLevel(logging.WARNING)
    try:
        return asyncio.run(_run(plugin, rc))
    except (OSError, RuntimeError, ValueError) as e:
        plugin.log.error("plugin failed to start", error=str(e))
        return 1


async def _run(plugin: Plugin, rc: RemoteConfig) -> int:
    from ._serve import _Servicer

    cert, key, ca = _read(rc.cert_file), _read(rc.key_file), _read(rc.client_ca_file)
    if rc.state_address:
        creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
        plugin.state._set_remote(rc.state_address, creds)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", _MAX_MSG),
                                      ("grpc.max_send_message_length", _MAX_MSG)])
    pb_grpc.add_PluginServiceServicer_to_server(_Servicer(plugin), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for svc in (contract.HEALTH_SERVICE_NAME, ""):
        await health.set(svc, health_pb2.HealthCheckResponse.SERVING)
    server_creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)
    if server.add_secure_port(rc.listen, server_creds) == 0:
        raise OSError(f"couldn't listen on {rc.listen}")
    await server.start()
    plugin.log.info("plugin serving remotely", listen=rc.listen, state_address=rc.state_address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await health.enter_graceful_shutdown()
    await plugin._drain(DRAIN_GRACE)
    await server.stop(DRAIN_GRACE)
    plugin.state._close()
    return 0
