"""The backend contract: the small interface a framework adapter implements.

Rule: a backend implements the ``_``-prefixed abstract methods and nothing generic. The
public methods here check arguments (so bad input fails the same everywhere) and add the
core TLS layer where a backend has no native TLS; streams, timeouts and everything else
are core code built on this class.
"""

from __future__ import annotations

import abc
import ssl as _ssl
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from . import _errors
from ._protocols import DatagramProtocol
from ._protocols import Protocol as StreamProtocol
from ._transports import DatagramTransport, Transport

__all__ = ["Backend", "Future", "Handle", "Server", "Task"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
P = TypeVar("P", bound=StreamProtocol)
DP = TypeVar("DP", bound=DatagramProtocol)


@runtime_checkable
class Handle(Protocol):
    """A scheduled call (``call_soon``/``call_later``)."""

    def cancel(self) -> None:
        """Don't run it, if it has not run yet."""


@runtime_checkable
class Future(Protocol[T]):
    """A one-shot result, awaitable by the backend that made it (``create_future``)."""

    def set_result(self, result: T) -> None: ...
    def set_exception(self, exception: BaseException) -> None: ...
    def done(self) -> bool: ...
    def cancelled(self) -> bool: ...
    def cancel(self) -> bool: ...
    def result(self) -> T: ...
    def __await__(self) -> Generator[Any, Any, T]: ...


@runtime_checkable
class Task(Protocol[T_co]):
    """A spawned coroutine: await it for its result, or cancel it.

    ``cancel()`` delivers ``polyloop.Cancelled`` at the coroutine's current ``await``;
    awaiting a cancelled task raises ``polyloop.Cancelled``.
    """

    def cancel(self) -> bool: ...
    def done(self) -> bool: ...
    def result(self) -> T_co: ...
    def __await__(self) -> Generator[Any, Any, T_co]: ...


class Server(abc.ABC):
    """A listening endpoint returned by ``listen_tcp``/``listen_unix``."""

    @property
    @abc.abstractmethod
    def addresses(self) -> list[Any]:
        """Bound addresses: ``(host, port, ...)`` tuples, or paths for Unix sockets."""

    @property
    def port(self) -> int:
        """The first bound TCP port (handy after listening on port 0)."""
        for addr in self.addresses:
            if isinstance(addr, tuple):
                return int(addr[1])
        raise ValueError("this server has no TCP address")

    @abc.abstractmethod
    def close(self) -> None:
        """Stop accepting. Open connections are left alone. A Unix socket file is removed."""

    @abc.abstractmethod
    async def wait_closed(self) -> None:
        """Wait until the listening sockets are closed."""

    async def aclose(self) -> None:
        """``close()``, then ``wait_closed()``."""
        self.close()
        await self.wait_closed()


class Backend(abc.ABC):
    """One framework, adapted. An instance is created per ``polyloop.run``.

    Third-party backends subclass this, register under the entry-point group
    ``polyloop.backends``, and prove themselves with
    ``polyloop conformance --backend their_pkg:TheirBackend``.
    """

    #: The name users pass as ``backend=``.
    name: ClassVar[str] = "?"
    #: False if the backend cannot take a stdlib ``ssl.SSLContext`` itself; the core TLS
    #: layer (``ssl.MemoryBIO``) then runs over its plain transports.
    native_tls: ClassVar[bool] = False
    #: Option names accepted by ``__init__`` (for the CLI and error messages).
    options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            known = ", ".join(self.options) or "none"
            raise TypeError(
                f"unknown option(s) for the {self.name} backend: {', '.join(unknown)}"
                f" (known: {known})"
            )

    @classmethod
    def framework_version(cls) -> str:
        """The adapted framework's version, for reports."""
        return "?"

    def __repr__(self) -> str:
        return f"<polyloop {self.name} backend>"

    # --- lifecycle and scheduling ---

    @abc.abstractmethod
    def run(self, main: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``main(*args)`` on a fresh loop/reactor/hub and return its result.

        Everything is disposed of before returning: servers and connections left open
        are closed, remaining tasks cancelled, timers and threads gone, no fd leaked.
        """

    @abc.abstractmethod
    def time(self) -> float:
        """The backend's monotonic clock, in seconds."""

    @abc.abstractmethod
    def call_soon(self, fn: Callable[..., object], *args: Any) -> Handle:
        """Call ``fn(*args)`` on the next loop iteration, in FIFO order."""

    @abc.abstractmethod
    def call_later(self, delay: float, fn: Callable[..., object], *args: Any) -> Handle:
        """Call ``fn(*args)`` after ``delay`` seconds."""

    @abc.abstractmethod
    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        """``call_soon`` from any thread; wakes the loop."""

    @abc.abstractmethod
    def spawn(self, coro: Coroutine[Any, Any, T]) -> Task[T]:
        """Start running ``coro`` concurrently."""

    @abc.abstractmethod
    def create_future(self) -> Future[Any]:
        """A future that coroutines on this backend can await."""

    @abc.abstractmethod
    async def sleep(self, seconds: float) -> None:
        """Suspend the caller for ``seconds`` (0 yields to the loop)."""

    @abc.abstractmethod
    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a worker thread of this backend's pool."""

    # --- networking: the public methods check, the _methods do the work ---

    async def listen_tcp(
        self,
        protocol_factory: Callable[[], StreamProtocol],
        host: str | None = "127.0.0.1",
        port: int = 0,
        *,
        ssl: _ssl.SSLContext | None = None,
        backlog: int = 128,
    ) -> Server:
        """Listen on ``host:port`` (``None``: all interfaces); ``port=0`` picks one.

        ``OSError`` with ``errno.EADDRINUSE`` if the address is taken.
        """
        _errors.check_callable("protocol_factory", protocol_factory)
        _errors.check_host(host, allow_none=True)
        _errors.check_port(port, allow_zero=True)
        _errors.check_ssl(ssl, server_side=True)
        factory = self._tls_factory(protocol_factory, ssl, server_side=True)
        return await self._listen_tcp(factory, host, port, ssl=self._native(ssl), backlog=backlog)

    async def connect_tcp(
        self,
        protocol_factory: Callable[[], P],
        host: str,
        port: int,
        *,
        ssl: _ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> tuple[Transport, P]:
        """Connect to ``host:port``; returns once connected (and TLS handshaken).

        ``ConnectionRefusedError`` if nothing listens; ``ssl.SSLCertVerificationError``
        if the server's certificate does not verify.
        """
        _errors.check_callable("protocol_factory", protocol_factory)
        _errors.check_host(host, allow_none=False)
        _errors.check_port(port, allow_zero=False)
        _errors.check_ssl(ssl, server_hostname, server_side=False)
        hostname = server_hostname if server_hostname is not None else host
        return await self._connect(
            lambda f, ssl_: self._connect_tcp(f, host, port, ssl=ssl_, server_hostname=hostname),
            protocol_factory,
            ssl,
            hostname,
        )

    async def listen_unix(
        self,
        protocol_factory: Callable[[], StreamProtocol],
        path: str,
        *,
        ssl: _ssl.SSLContext | None = None,
        backlog: int = 128,
    ) -> Server:
        """Listen on a Unix socket at ``path``; ``close()`` removes the socket file.

        A stale socket file at ``path`` (nothing accepts on it) is removed first; one that
        a live server listens on gives ``OSError`` with ``errno.EADDRINUSE``.
        """
        _errors.check_callable("protocol_factory", protocol_factory)
        path = _errors.check_path(path)
        _errors.check_ssl(ssl, server_side=True)
        _errors.clear_stale_unix_socket(path)
        factory = self._tls_factory(protocol_factory, ssl, server_side=True)
        return await self._listen_unix(factory, path, ssl=self._native(ssl), backlog=backlog)

    async def connect_unix(
        self,
        protocol_factory: Callable[[], P],
        path: str,
        *,
        ssl: _ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> tuple[Transport, P]:
        """Connect to the Unix socket at ``path``.

        ``FileNotFoundError`` if there is no such file, ``ConnectionRefusedError`` if
        nothing listens on it.
        """
        _errors.check_callable("protocol_factory", protocol_factory)
        path = _errors.check_path(path)
        _errors.check_ssl(ssl, server_hostname, server_side=False)
        if ssl is not None and server_hostname is None and ssl.check_hostname:
            raise ValueError("server_hostname is required for TLS over a Unix socket")
        return await self._connect(
            lambda f, ssl_: self._connect_unix(f, path, ssl=ssl_, server_hostname=server_hostname),
            protocol_factory,
            ssl,
            server_hostname,
        )

    async def open_udp(
        self,
        protocol_factory: Callable[[], DP],
        local_addr: tuple[str, int] | None = None,
        remote_addr: tuple[str, int] | None = None,
    ) -> tuple[DatagramTransport, DP]:
        """Open a UDP endpoint bound to ``local_addr`` and/or connected to ``remote_addr``."""
        _errors.check_callable("protocol_factory", protocol_factory)
        if local_addr is None and remote_addr is None:
            raise ValueError("open_udp needs local_addr, remote_addr or both")
        for addr, zero in ((local_addr, True), (remote_addr, False)):
            if addr is not None:
                if not isinstance(addr, tuple) or len(addr) != 2:
                    raise TypeError("addresses must be (host, port) tuples")
                _errors.check_host(addr[0], allow_none=False)
                _errors.check_port(addr[1], allow_zero=zero)
        return await self._open_udp(protocol_factory, local_addr, remote_addr)

    # --- what a backend implements ---

    @abc.abstractmethod
    async def _listen_tcp(
        self,
        protocol_factory: Callable[[], StreamProtocol],
        host: str | None,
        port: int,
        *,
        ssl: _ssl.SSLContext | None,
        backlog: int,
    ) -> Server:
        """Listen. ``ssl`` is only ever set if ``native_tls`` is true."""

    @abc.abstractmethod
    async def _connect_tcp(
        self,
        protocol_factory: Callable[[], StreamProtocol],
        host: str,
        port: int,
        *,
        ssl: _ssl.SSLContext | None,
        server_hostname: str | None,
    ) -> tuple[Transport, StreamProtocol]:
        """Connect, returning the transport and the protocol the factory made."""

    @abc.abstractmethod
    async def _listen_unix(
        self,
        protocol_factory: Callable[[], StreamProtocol],
        path: str,
        *,
        ssl: _ssl.SSLContext | None,
        backlog: int,
    ) -> Server: ...

    @abc.abstractmethod
    async def _connect_unix(
        self,
        protocol_factory: Callable[[], StreamProtocol],
        path: str,
        *,
        ssl: _ssl.SSLContext | None,
        server_hostname: str | None,
    ) -> tuple[Transport, StreamProtocol]: ...

    @abc.abstractmethod
    async def _open_udp(
        self,
        protocol_factory: Callable[[], DP],
        local_addr: tuple[str, int] | None,
        remote_addr: tuple[str, int] | None,
    ) -> tuple[DatagramTransport, DP]: ...

    # --- TLS plumbing ---

    def _native(self, ssl: _ssl.SSLContext | None) -> _ssl.SSLContext | None:
        return ssl if self.native_tls else None

    def _tls_factory(
        self,
        factory: Callable[[], StreamProtocol],
        ssl: _ssl.SSLContext | None,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> Callable[[], StreamProtocol]:
        if ssl is None or self.native_tls:
            return factory
        from ._tls import TLSProtocol

        def make() -> StreamProtocol:
            return TLSProtocol(self, factory(), ssl, server_side, server_hostname)

        return make

    async def _connect(
        self,
        connect: Callable[
            [Callable[[], StreamProtocol], _ssl.SSLContext | None],
            Awaitable[tuple[Transport, StreamProtocol]],
        ],
        protocol_factory: Callable[[], P],
        ssl: _ssl.SSLContext | None,
        server_hostname: str | None,
    ) -> tuple[Transport, P]:
        if ssl is None or self.native_tls:
            transport, protocol = await connect(protocol_factory, ssl)
            return transport, protocol  # type: ignore[return-value]
        from ._tls import TLSProtocol

        factory = self._tls_factory(
            protocol_factory, ssl, server_side=False, server_hostname=server_hostname
        )
        raw, tls = await connect(factory, None)
        assert isinstance(tls, TLSProtocol)
        try:
            await tls.handshake_done
        except BaseException:
            raw.abort()
            raise
        return tls.app_transport, tls.app_protocol  # type: ignore[return-value]
