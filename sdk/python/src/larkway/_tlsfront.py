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
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Iterable

from ._log import Logger
from ._tls import self_signed_cert

_HANDSHAKE_TIMEOUT = 10.0
_CHUNK = 1 << 16


def server_context(client_cert_pem: str, private_dir: str) -> tuple[ssl.SSLContext, str]:
    """A TLS server context with a fresh self-signed certificate that requires
    the host's certificate. Returns it and the handshake's certificate field."""
    cert_pem, key_pem, cert_field = self_signed_cert()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # load_cert_chain reads files only: write them in the private directory
    # and remove them at once.
    cert_path, key_path = os.path.join(private_dir, "cert.pem"), os.path.join(private_dir, "key.pem")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    with open(cert_path, "wb") as f:
        f.write(cert_pem)
    try:
        ctx.load_cert_chain(cert_path, key_path)
    finally:
        os.unlink(cert_path)
        os.unlink(key_path)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=client_cert_pem)
    ctx.set_alpn_protocols(["h2"])
    return ctx, cert_field


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
