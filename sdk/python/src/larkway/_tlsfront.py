"""The mTLS front of a plugin served under go-plugin's AutoMTLS.

go-plugin's host presents an ECDSA P-521 client certificate. grpcio's
BoringSSL does not offer ecdsa_secp521r1_sha512 in its TLS 1.3
CertificateRequest, so Go's client finds no usable signature scheme, sends no
certificate, and the handshake fails (PEER_DID_NOT_RETURN_A_CERTIFICATE); the
Python API cannot cap grpcio at TLS 1.2 either. So TLS is terminated here with
Python's ssl module (OpenSSL, which offers P-521), requiring and verifying the
host's certificate and negotiating ALPN "h2", and the plaintext HTTP/2 bytes
are relayed to the gRPC server listening on a Unix socket in a private (0700)
directory that only this user can reach.

The same holds the other way round for go-plugin's broker: the core serves
the plugin's state store on a connection the plugin dials, as a TLS server
with that P-521 certificate, and grpcio's TLS client offers no P-521
signature scheme either. So a grpcio channel talks plaintext to a Unix socket
in the private directory, and TLSDialRelay carries each connection to the
core over Python's ssl, presenting the plugin's certificate (the one in the
handshake line, which the core trusts) and verifying the core's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import ssl
import threading
from collections.abc import Iterable

from ._log import Logger
from ._tls import self_signed_cert

_HANDSHAKE_TIMEOUT = 10.0
_CHUNK = 1 << 16


def tls_contexts(client_cert_pem: str, private_dir: str) -> tuple[ssl.SSLContext, ssl.SSLContext, str]:
    """TLS contexts with a fresh self-signed certificate: a server context
    that requires the host's certificate, and a client context (for the
    broker's connections to the host) that presents the same certificate and
    trusts only the host's. Returns both and the handshake's certificate
    field."""
    cert_pem, key_pem, cert_field = self_signed_cert()
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # checks the host name and verifies
    # load_cert_chain reads files only: write them in the private directory
    # and remove them at once.
    cert_path, key_path = os.path.join(private_dir, "cert.pem"), os.path.join(private_dir, "key.pem")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    with open(cert_path, "wb") as f:
        f.write(cert_pem)
    try:
        for ctx in (server, client):
            ctx.load_cert_chain(cert_path, key_path)
    finally:
        os.unlink(cert_path)
        os.unlink(key_path)
    for ctx in (server, client):
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=client_cert_pem)
        ctx.set_alpn_protocols(["h2"])
    return server, client, cert_field


def server_context(client_cert_pem: str, private_dir: str) -> tuple[ssl.SSLContext, str]:
    """The server context of tls_contexts and the handshake's certificate field."""
    server, _, cert_field = tls_contexts(client_cert_pem, private_dir)
    return server, cert_field


class TLSFront:
    """Accepts TLS on 127.0.0.1 and relays each connection to a Unix socket."""

    def __init__(self, backend_path: str, ctx: ssl.SSLContext, log: Logger) -> None:
        self.backend = backend_path
        self.ctx = ctx
        self.log = log
        self.server: asyncio.AbstractServer | None = None
        self.conns: set[asyncio.Task[None]] = set()
        self.writers: set[asyncio.StreamWriter] = set()

    async def listen(self, ports: Iterable[int]) -> int | None:
        """Listen on the first port that binds; None if none does."""
        for port in ports:
            try:
                self.server = await asyncio.start_server(
                    self._accept, "127.0.0.1", port, ssl=self.ctx, ssl_handshake_timeout=_HANDSHAKE_TIMEOUT)
            except OSError:
                continue
            return int(self.server.sockets[0].getsockname()[1])
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.conns.add(task)
            task.add_done_callback(self.conns.discard)
        try:
            try:
                ur, uw = await asyncio.open_unix_connection(self.backend)
            except OSError as e:
                self.log.warn("relaying a connection to the gRPC server failed", error=str(e))
                writer.close()
                return
            self.writers.update((writer, uw))
            try:
                await asyncio.gather(_pipe(reader, uw), _pipe(ur, writer), return_exceptions=True)
            finally:
                self.writers.difference_update((writer, uw))
        except asyncio.CancelledError:
            # Ending normally: asyncio (3.11) logs an error for a cancelled
            # connection callback.
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for w in list(self.writers):
            try:
                w.close()
            except (OSError, RuntimeError):
                pass
        if self.conns:
            _, pending = await asyncio.wait(set(self.conns), timeout=0.5)
            for t in pending:
                t.cancel()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await src.read(_CHUNK)
            if not data:
                break
            dst.write(data)
            await dst.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        # Either side ending ends the connection (HTTP/2 needs no half-close).
        try:
            dst.close()
        except (OSError, RuntimeError):
            pass


#: The host's certificate names this server (go-plugin's generateCert).
HOST_SERVER_NAME = "localhost"


class TLSDialRelay:
    """Listens on a Unix socket and carries each connection to the host's
    address (``network`` "unix" or "tcp", as go-plugin's ConnInfo gives it)
    over TLS with ``ctx``. It runs its own event loop on a daemon thread, so
    a handler that blocks the plugin's loop (a sync call from an async
    handler) cannot stall the bytes its own call waits for."""

    def __init__(self, network: str, address: str, ctx: ssl.SSLContext | None, path: str, log: Logger) -> None:
        self.network, self.address, self.ctx, self.path, self.log = network, address, ctx, path, log
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Listen on path and serve on a daemon thread; raises OSError if the
        socket cannot be created."""
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._server = self._loop.run_until_complete(asyncio.start_unix_server(self._accept, self.path))
            except BaseException as e:  # noqa: BLE001 - reported to start()
                self._loop.close()
                ready.set_exception(e)
                return
            ready.set_result(None)
            self._loop.run_forever()
            # Stopped: close the listener and every relayed connection.
            self._server.close()
            for w in list(self._writers):
                try:
                    w.close()
                except (OSError, RuntimeError):
                    pass
            pending = asyncio.all_tasks(self._loop)
            for t in pending:
                t.cancel()
            if pending:
                self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

        self._thread = threading.Thread(target=run, name="larkway-broker-relay", daemon=True)
        self._thread.start()
        ready.result(timeout)

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        tls: dict = {}
        if self.ctx is not None:
            tls = {"ssl": self.ctx, "server_hostname": HOST_SERVER_NAME, "ssl_handshake_timeout": _HANDSHAKE_TIMEOUT}
        if self.network == "unix":
            return await asyncio.open_unix_connection(self.address, **tls)
        host, _, port = self.address.rpartition(":")
        return await asyncio.open_connection(host.strip("[]"), int(port), **tls)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await self._open()
        except (OSError, ssl.SSLError, ValueError, asyncio.TimeoutError) as e:
            self.log.warn("connecting to the core's broker address failed", network=self.network,
                          address=self.address, error=str(e))
            writer.close()
            return
        self._writers.update((writer, uw))
        try:
            await asyncio.gather(_pipe(reader, uw), _pipe(ur, writer), return_exceptions=True)
        finally:
            self._writers.difference_update((writer, uw))

    def close(self) -> None:
        """Stop relaying; idempotent, waits for the thread."""
        if self._thread is None:
            return
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._thread = None
