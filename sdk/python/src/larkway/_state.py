"""The plugin's state store: a key-value store the core keeps for it.

The core serves ``larkway.plugin.v1.StateService`` to each plugin over
go-plugin's broker (see _broker) — in Redis when it runs several replicas —
so plugin processes stay stateless while conversations keep state across
replicas and restarts. Keys are private to the plugin.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import grpc
from google.protobuf import duration_pb2

from ._gen import state_pb2 as spb
from ._gen import state_pb2_grpc as spb_grpc

if TYPE_CHECKING:
    from ._broker import Broker

#: Bound on one state call when neither the caller nor the delivery sets one.
DEFAULT_TIMEOUT = 10.0

# The deadline of the delivery being handled (set by the SDK around each
# handler call; copied into handler threads), which bounds state calls.
_deadline: contextvars.ContextVar[datetime | None] = contextvars.ContextVar("larkway_deadline", default=None)

T = TypeVar("T")


class StateUnavailable(Exception):
    """The core offers no state store (or, in tests, no backend was set).

    Raised from a handler it means RETRY, like any other exception."""


class StateError(Exception):
    """A state store call failed (the core's store is down, the call timed
    out, the key or value is invalid). ``code`` is the gRPC status code name,
    e.g. "UNAVAILABLE", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED"."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Entry:
    """A stored value and its revision."""

    value: bytes
    #: Changes on every write; pass it to compare_and_swap.
    revision: int

    def text(self) -> str:
        """The value decoded as UTF-8."""
        return self.value.decode("utf-8")


class StateBackend(Protocol):
    """What State calls: the core's StateService over the broker, or the
    test kit's ``larkway.testing.MemoryState``. Methods are called from any
    thread; ``ttl`` is in seconds (None or 0: the store's default, 7 days);
    ``timeout`` bounds the call in seconds (None: no bound of the caller's)."""

    def get(self, key: str, timeout: float | None) -> Entry | None: ...

    def set(self, key: str, value: bytes, ttl: float | None, timeout: float | None) -> int: ...

    def compare_and_swap(self, key: str, expected_revision: int, value: bytes, ttl: float | None,
                         timeout: float | None) -> tuple[bool, int]: ...

    def delete(self, key: str, timeout: float | None) -> bool: ...


def _bytes(value: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"state values are bytes or str, not {type(value).__name__}")


class State:
    """The plugin's key-value store (``p.state``), kept by the core.

    >>> e = p.state.get("count")                  # Entry(value, revision) or None
    >>> n = int(e.value) + 1 if e else 1
    >>> swapped, rev = p.state.compare_and_swap("count", e.revision if e else 0, str(n))

    Values are bytes (str is encoded as UTF-8). A ttl (seconds) of None
    means the core's default (7 days). Calls are synchronous — fine in a
    plain handler, which runs on a worker thread; ``async def`` handlers
    use the ``a``-prefixed coroutines (``await p.state.aget(key)``) so the
    plugin's event loop is not blocked. Each call is bounded by ``timeout``
    (seconds), by the delivery's deadline, and by 10 s.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._backend: StateBackend | None = None
        self._broker: Broker | None = None
        self._broker_id = 0
        # A remote plugin dials the core's state store itself.
        self._remote: tuple[str, grpc.ChannelCredentials] | None = None

    # ---- wiring (internal) ------------------------------------------

    def _set_backend(self, backend: StateBackend | None) -> None:
        with self._lock:
            self._backend = backend

    def _set_remote(self, address: str, creds: grpc.ChannelCredentials) -> None:
        with self._lock:
            self._remote = (address, creds)

    def _set_broker(self, broker: Broker | None) -> None:
        with self._lock:
            self._broker = broker

    def _set_broker_id(self, broker_id: int) -> None:
        with self._lock:
            if broker_id != self._broker_id and isinstance(self._backend, _GRPCState):
                self._backend.close()
                self._backend = None
            self._broker_id = broker_id

    def _get(self, timeout: float | None) -> StateBackend:
        with self._lock:
            if self._backend is not None:
                return self._backend
            if self._remote is not None:
                self._backend = _GRPCState(grpc.secure_channel(self._remote[0], self._remote[1]))
                return self._backend
            if self._broker is None or self._broker_id == 0:
                raise StateUnavailable("larkway: no state store available (the core offers none, or in tests "
                                       "set one with p.set_state_backend(larkway.testing.MemoryState()))")
            try:
                ch = self._broker.dial(self._broker_id, timeout=min(timeout or DEFAULT_TIMEOUT, DEFAULT_TIMEOUT))
            except Exception as e:  # noqa: BLE001 - BrokerError, OSError
                raise StateUnavailable(f"larkway: connecting to the state store: {e}") from e
            self._backend = _GRPCState(ch)
            return self._backend

    def _close(self) -> None:
        with self._lock:
            if isinstance(self._backend, _GRPCState):
                self._backend.close()
                self._backend = None

    # ---- the API ----------------------------------------------------

    def get(self, key: str, *, timeout: float | None = None) -> Entry | None:
        """Read key: its Entry, or None when it does not exist."""
        t = _timeout(timeout)
        return self._get(t).get(key, t)

    def set(self, key: str, value: bytes | str, *, ttl: float | None = None, timeout: float | None = None) -> int:
        """Write key unconditionally; returns the new revision."""
        t = _timeout(timeout)
        return self._get(t).set(key, _bytes(value), ttl, t)

    def compare_and_swap(self, key: str, expected_revision: int, value: bytes | str, *, ttl: float | None = None,
                         timeout: float | None = None) -> tuple[bool, int]:
        """Write key only if its revision is still expected_revision (0: the
        key must not exist). Returns ``(swapped, revision)``: whether it
        wrote, and the revision now stored."""
        t = _timeout(timeout)
        return self._get(t).compare_and_swap(key, int(expected_revision), _bytes(value), ttl, t)

    def delete(self, key: str, *, timeout: float | None = None) -> bool:
        """Remove key; returns whether it existed."""
        t = _timeout(timeout)
        return self._get(t).delete(key, t)

    async def aget(self, key: str, *, timeout: float | None = None) -> Entry | None:
        """get, for async handlers."""
        return await _in_thread(self.get, key, timeout=timeout)

    async def aset(self, key: str, value: bytes | str, *, ttl: float | None = None,
                   timeout: float | None = None) -> int:
        """set, for async handlers."""
        return await _in_thread(self.set, key, value, ttl=ttl, timeout=timeout)

    async def acompare_and_swap(self, key: str, expected_revision: int, value: bytes | str, *,
                                ttl: float | None = None, timeout: float | None = None) -> tuple[bool, int]:
        """compare_and_swap, for async handlers."""
        return await _in_thread(self.compare_and_swap, key, expected_revision, value, ttl=ttl, timeout=timeout)

    async def adelete(self, key: str, *, timeout: float | None = None) -> bool:
        """delete, for async handlers."""
        return await _in_thread(self.delete, key, timeout=timeout)


async def _in_thread(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()  # keeps the delivery's deadline
    return await loop.run_in_executor(None, functools.partial(ctx.run, fn, *args, **kw))


def _timeout(explicit: float | None) -> float:
    """The bound on one call: the caller's, the delivery's deadline, 10 s."""
    t = DEFAULT_TIMEOUT if explicit is None else float(explicit)
    dl = _deadline.get()
    if dl is not None:
        t = min(t, dl.timestamp() - time.time())
    return max(t, 0.001)


def _ttl(ttl: float | None) -> duration_pb2.Duration | None:
    if not ttl or ttl <= 0:
        return None
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(round(ttl * 1e9)))
    return d


class _GRPCState:
    """StateBackend over the core's StateService."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.stub = spb_grpc.StateServiceStub(channel)

    def close(self) -> None:
        self.channel.close()

    @staticmethod
    def _call(method: Any, req: Any, timeout: float | None) -> Any:
        try:
            return method(req, timeout=timeout, wait_for_ready=True)
        except grpc.RpcError as e:
            code = e.code().name if hasattr(e, "code") and e.code() is not None else ""
            details = e.details() if hasattr(e, "details") else str(e)
            raise StateError(f"larkway: state store: {code}: {details}", code) from None

    def get(self, key: str, timeout: float | None) -> Entry | None:
        r = self._call(self.stub.Get, spb.GetRequest(key=key), timeout)
        return Entry(bytes(r.value), int(r.revision)) if r.found else None

    def set(self, key: str, value: bytes, ttl: float | None, timeout: float | None) -> int:
        req = spb.SetRequest(key=key, value=value, ttl=_ttl(ttl))
        return int(self._call(self.stub.Set, req, timeout).revision)

    def compare_and_swap(self, key: str, expected_revision: int, value: bytes, ttl: float | None,
                         timeout: float | None) -> tuple[bool, int]:
        req = spb.CompareAndSwapRequest(key=key, expected_revision=expected_revision, value=value, ttl=_ttl(ttl))
        r = self._call(self.stub.CompareAndSwap, req, timeout)
        return bool(r.swapped), int(r.revision)

    def delete(self, key: str, timeout: float | None) -> bool:
        return bool(self._call(self.stub.Delete, spb.DeleteRequest(key=key), timeout).deleted)
