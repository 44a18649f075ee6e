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
import socket
import ssl
import threading
from collections.abc import Iterable
from typing import Any

from ._log import Logger
from ._tls import self_signed_cert

_HANDSHAKE_TIMEOUT = 10.0
_CHUNK = 1 << 18


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
    """Accepts TLS on 127.0.0.1 and relays each connection to a Unix socket.

    The relay runs on the plugin's event loop with raw non-blocking sockets
    and an ssl.SSLObject over memory BIOs: per chunk one recv, one C call to
    decrypt or encrypt, and one send. Every Handle message crosses it, so it
    avoids both asyncio's SSL streams (several Python-level callbacks per
    chunk) and relay threads (which made the GIL change hands several times
    per message, with the gRPC poller and handler threads also waiting).
    """

    def __init__(self, backend_path: str, ctx: ssl.SSLContext, log: Logger) -> None:
        self.backend = backend_path
        self.ctx = ctx
        self.log = log
        self.sock: socket.socket | None = None
        self.acceptor: asyncio.Task[None] | None = None
        self.conns: set[_Relay] = set()
        self.closed = False

    async def listen(self, ports: Iterable[int]) -> int | None:
        """Listen on the first port that binds; None if none does."""
        for port in ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", port))
                s.listen(128)
            except OSError:
                s.close()
                continue
            s.setblocking(False)
            self.sock = s
            self.acceptor = asyncio.ensure_future(self._accept_loop(s))
            return int(s.getsockname()[1])
        return None

    async def _accept_loop(self, lsock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while not self.closed:
            try:
                conn, _ = await loop.sock_accept(lsock)
            except OSError as e:
                if self.closed:
                    return
                self.log.warn("accepting a connection failed", error=str(e))
                await asyncio.sleep(0.05)
                continue
            r = _Relay(loop, conn, self)
            self.conns.add(r)
            r.start()

    async def close(self) -> None:
        self.closed = True
        if self.acceptor is not None:
            self.acceptor.cancel()
        if self.sock is not None:
            self.sock.close()
        for r in list(self.conns):
            r.close()


class _Relay:
    """One accepted connection: TLS on tcp, plaintext HTTP/2 to the gRPC
    server on unix. Driven by loop reader and writer callbacks; a side whose
    peer is slow to read stops the other side being read (backpressure)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tcp: socket.socket, front: TLSFront) -> None:
        self.loop = loop
        self.tcp = tcp
        self.front = front
        self.unix: socket.socket | None = None
        self.tls_in = ssl.MemoryBIO()
        self.tls_out = ssl.MemoryBIO()
        self.obj = front.ctx.wrap_bio(self.tls_in, self.tls_out, server_side=True)
        self.to_tcp = bytearray()
        self.to_unix = bytearray()
        self.handshake_timer: asyncio.TimerHandle | None = None
        self.closed = False

    def start(self) -> None:
        self.tcp.setblocking(False)
        self.tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.handshake_timer = self.loop.call_later(_HANDSHAKE_TIMEOUT, self._handshake_timeout)
        self.loop.add_reader(self.tcp.fileno(), self._handshake_readable)

    def _handshake_timeout(self) -> None:
        self.front.log.debug("TLS handshake timed out")
        self.close()

    def _handshake_readable(self) -> None:
        if not self._feed_tls():
            return
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            self._send_tcp(self.tls_out.read())
            return
        except (ssl.SSLError, OSError) as e:
            # A client without the host's certificate, a port scan, ...: the
            # gRPC client sees the failed handshake.
            self.front.log.debug("TLS handshake failed", error=str(e))
            self._send_tcp(self.tls_out.read())
            self.close()
            return
        if self.handshake_timer is not None:
            self.handshake_timer.cancel()
        self._send_tcp(self.tls_out.read())
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            unix.connect(self.front.backend)  # a local socket: does not block
        except OSError as e:
            unix.close()
            self.front.log.warn("relaying a connection to the gRPC server failed", error=str(e))
            self.close()
            return
        unix.setblocking(False)
        self.unix = unix
        self.loop.remove_reader(self.tcp.fileno())
        self.loop.add_reader(self.tcp.fileno(), self._tcp_readable)
        self.loop.add_reader(unix.fileno(), self._unix_readable)
        if self.tls_in.pending:  # application data that came with the handshake
            self._decrypt()

    @staticmethod
    def _recv(s: socket.socket) -> bytes | None:
        try:
            return s.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return b""

    def _tcp_readable(self) -> None:
        if self._feed_tls():
            self._decrypt()

    def _feed_tls(self) -> bool:
        """Move what the client sent into the TLS object; False when there
        was nothing to read, or the connection ended (and is closed)."""
        data = self._recv(self.tcp)
        if data is None:
            return False
        if not data:
            self.close()
            return False
        self.tls_in.write(data)
        return True

    def _decrypt(self) -> None:
        plain = []
        eof = False
        obj = self.obj
        while True:
            try:
                chunk = obj.read(_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLError as e:  # close_notify, bad record, ...
                if not isinstance(e, ssl.SSLZeroReturnError):
                    self.front.log.debug("relayed connection ended with a TLS error", error=str(e))
                eof = True
                break
            if not chunk:  # close_notify, as _ssl reports it
                eof = True
                break
            plain.append(chunk)
        if self.tls_out.pending:  # reading may produce records (a KeyUpdate answer)
            self._send_tcp(self.tls_out.read())
        if plain:
            self._send_unix(plain[0] if len(plain) == 1 else b"".join(plain))
        if eof:
            self.close()

    def _unix_readable(self) -> None:
        assert self.unix is not None
        data = self._recv(self.unix)
        if data is None:
            return
        if not data:
            self.close()
            return
        try:
            self.obj.write(data)
        except ssl.SSLError as e:
            self.front.log.debug("relayed connection ended with a TLS error", error=str(e))
            self.close()
            return
        self._send_tcp(self.tls_out.read())

    # Sending: straight to the socket; what does not fit is kept, the socket
    # is watched for writability, and the side feeding it stops being read.

    def _send_tcp(self, data: bytes) -> None:
        if data and not self.closed:
            self._send(self.tcp, self.to_tcp, data, self._tcp_writable, self.unix)

    def _send_unix(self, data: bytes) -> None:
        if data and not self.closed and self.unix is not None:
            self._send(self.unix, self.to_unix, data, self._unix_writable, self.tcp)

    def _send(self, s: socket.socket, buf: bytearray, data: bytes, writable: Any,
              source: socket.socket | None) -> None:
        if buf:
            buf += data
            return
        try:
            n = s.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self.close()
            return
        if n < len(data):
            buf += memoryview(data)[n:]
            self.loop.add_writer(s.fileno(), writable)
            if source is not None:
                self.loop.remove_reader(source.fileno())

    def _tcp_writable(self) -> None:
        self._flush(self.tcp, self.to_tcp, self.unix, self._unix_readable)

    def _unix_writable(self) -> None:
        assert self.unix is not None
        self._flush(self.unix, self.to_unix, self.tcp, self._tcp_readable)

    def _flush(self, s: socket.socket, buf: bytearray, source: socket.socket | None, readable: Any) -> None:
        try:
            n = s.send(buf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        del buf[:n]
        if not buf:
            self.loop.remove_writer(s.fileno())
            if source is not None and not self.closed:
                self.loop.add_reader(source.fileno(), readable)

    def close(self) -> None:
        """End the connection (either side ending ends both: HTTP/2 needs no
        half-close); idempotent."""
        if self.closed:
            return
        self.closed = True
        if self.handshake_timer is not None:
            self.handshake_timer.cancel()
        for s in (self.tcp, self.unix):
            if s is None:
                continue
            try:
                fd = s.fileno()
                if fd >= 0:
                    self.loop.remove_reader(fd)
                    self.loop.remove_writer(fd)
            except (ValueError, RuntimeError):  # closed socket or loop
                pass
            s.close()
        self.front.conns.discard(self)


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
