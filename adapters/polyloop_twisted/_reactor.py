"""Private reactors: building one, running it so that Ctrl-C gets through, taking it apart;
and the one object per fd that ``add_reader``/``add_writer`` hand to any reactor.

Facts measured on Twisted 26.10 that shaped this file (docs/backends/twisted.md):
- ``from twisted.internet import reactor`` installs a process-wide reactor, and so do
  ``deferToThread``, ``LoopingCall()``, ``coiterate``, ``react`` and
  ``listenSSL``/``connectSSL``/``startTLS`` (a TLS echo on a private reactor hangs).
  We build the reactor class ourselves and pass it around; TLS is the core's layer.
- A stopped reactor cannot run again, so each ``run`` builds a new one, and must then
  take it apart as Twisted's own ``ReactorBuilder._unbuildReactor`` does: else every
  run leaks the waker pipe (and, for epoll, the epoll fd; for asyncio, the loop).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import time as _time
from collections.abc import Callable
from typing import Any

from twisted.internet import interfaces
from zope.interface import implementer  # type: ignore[import-untyped]

__all__ = ["Watch", "build_reactor", "run_reactor", "unbuild_reactor"]

log = logging.getLogger("polyloop")


def build_reactor(kind: str) -> Any:
    """A new, private reactor of ``kind``; ``install()`` is never called."""
    if kind == "asyncio":
        from twisted.internet.asyncioreactor import AsyncioSelectorReactor

        # Its seconds() is the asyncio loop's time(): monotonic already.
        return AsyncioSelectorReactor(asyncio.new_event_loop())
    if kind == "epoll":
        reactor: Any = _epoll_reactor_class()()
    elif kind == "poll":
        from twisted.internet.pollreactor import PollReactor

        reactor = PollReactor()  # type: ignore[no-untyped-call]
    elif kind == "select":
        from twisted.internet.selectreactor import SelectReactor

        reactor = SelectReactor()
    else:
        raise ValueError(f"unknown reactor kind {kind!r}")
    # Twisted's posix reactors time every callLater with the wall clock (time.time), so a
    # clock step moves every timer. This reactor is ours alone: give it the monotonic
    # clock the contract promises for time(), and its timers follow it.
    reactor.seconds = _time.monotonic
    return reactor


@functools.cache
def _epoll_reactor_class() -> type[Any]:
    """``EPollReactor``, tolerant of an fd that was closed while still registered.

    A library may close a socket that still has a reader (asyncio's loops and
    selectors tolerate it). Twisted's ``EPollReactor._remove`` then deletes the fd from
    ``_selectables``, gets ``EBADF`` from ``epoll.unregister`` and leaves the fd in
    ``_reads``: the shutdown trigger logs the ``OSError`` and the next ``removeAll``
    (``disconnectAll`` in ``unbuild_reactor``) raises ``KeyError``. A closed fd has left
    the epoll set by itself, so here the bookkeeping just forgets it. The poll and select
    reactors need nothing: poll() has no kernel-side set, select takes objects.
    """
    from twisted.internet.epollreactor import EPollReactor

    class _EPollReactor(EPollReactor):
        def _remove(
            self, xer: Any, primary: Any, other: Any, selectables: Any, *events: int
        ) -> None:
            try:
                super()._remove(xer, primary, other, selectables, *events)  # type: ignore[no-untyped-call]
            except OSError as exc:
                if exc.errno not in (errno.EBADF, errno.ENOENT):
                    raise
                fd = xer.fileno()
                primary.discard(fd)
                if fd not in other:
                    selectables.pop(fd, None)

    return _EPollReactor


def unbuild_reactor(reactor: Any, close_loop: bool = True) -> None:
    """Free what a stopped reactor holds (``ReactorBuilder._unbuildReactor``, minus the
    global-reactor restore): the waker pipe, leftover selectables and timed calls, the
    poller's own fd, and (unless ``close_loop`` is false: mixed mode closes it with the
    IOLoop that shares it) the asyncio loop of an ``AsyncioSelectorReactor``."""
    reactor._uninstallHandler()
    if reactor.threadpool is not None:
        reactor._stopThreadPool()  # a shutdown trigger, which an interrupted run skips
    for reader in list(reactor._internalReaders):
        reactor.removeReader(reader)
        reader.connectionLost(None)
    reactor._internalReaders.clear()
    reactor.disconnectAll()
    for call in reactor.getDelayedCalls():
        call.cancel()
    poller = getattr(reactor, "_poller", None)
    if poller is not None and hasattr(poller, "close"):
        poller.close()  # epoll; poll() objects own no fd
    loop = getattr(reactor, "_asyncioEventloop", None)
    if loop is not None and close_loop:
        loop.close()


def run_reactor(reactor: Any, on_escape: Callable[[BaseException], None] | None = None) -> None:
    """``reactor.run(installSignalHandlers=False)``, but Ctrl-C gets through.

    ``ReactorBase.mainLoop`` runs each iteration under a handler that logs and swallows
    *every* exception, ``KeyboardInterrupt`` and ``SystemExit`` included: without our
    signal handlers (we install none) a Ctrl-C or a test timeout would vanish and the
    run would go on. This is the same loop without that handler; errors in callbacks
    are still caught and logged by the reactor where they happen.

    An ``AsyncioSelectorReactor`` runs ``run_forever()``, which lets them through: a
    callback of the asyncio loop raised it (the session's fds go to that loop directly,
    so a protocol's ``data_received`` is one). With ``on_escape`` (an owned reactor) it
    is handed over, as ``escape`` hands over what the reactor's own calls raise --
    ``on_escape`` cancels main, or stops the reactor for a second one -- and the loop
    runs on, so that main cleans up before ``run()`` raises it (as ``asyncio.run`` does).
    """
    if hasattr(reactor, "_asyncioEventloop"):
        reactor.startRunning(installSignalHandlers=False)  # what reactor.run() does
        while True:
            try:
                reactor._asyncioEventloop.run_forever()
                break
            except (SystemExit, KeyboardInterrupt) as exc:
                if on_escape is None:
                    raise
                on_escape(exc)
        reactor._justStopped = False
        return
    reactor.startRunning(installSignalHandlers=False)
    while reactor._started:
        reactor.runUntilCurrent()
        reactor.doIteration(reactor.running and reactor.timeout())


@implementer(interfaces.IReadDescriptor, interfaces.IWriteDescriptor)
class Watch:
    """One fd watched for ``add_reader``/``add_writer``: what the reactor polls.

    ``run(fn, ())`` calls a callback in the session's context and logs what it raises
    (the reactor would drop the fd). The session keeps one per fd while either callback
    is set.

    A fact of Twisted's epoll and poll reactors: an fd flagged ``EPOLLERR``/``EPOLLHUP``
    without ``EPOLLIN`` is never read or written. The reactor takes it for the end of the
    connection, drops it from both sets and calls ``connectionLost``: a refused connect
    (writable *and* in error), or an ICMP "port unreachable" on a connected UDP socket.
    asyncio's selectors report such an fd readable and writable instead, so that
    ``recv``/``SO_ERROR`` tells the owner what happened. So does this object: it
    registers again and calls both callbacks, until its owner removes them.
    """

    __slots__ = ("_run", "fd", "reactor", "reader", "writer")

    def __init__(
        self, reactor: Any, fd: int, run: Callable[[Callable[..., object], tuple[()]], None]
    ):
        self.reactor = reactor
        self.fd = fd
        self._run = run
        self.reader: Callable[[], object] | None = None
        self.writer: Callable[[], object] | None = None

    def set(self, reading: bool, fn: Callable[[], object] | None) -> bool:
        """Set one callback (``None``: clear it) and tell the reactor; True if one was set."""
        reactor = self.reactor
        if reading:
            was, self.reader = self.reader, fn
            (reactor.removeReader if fn is None else reactor.addReader)(self)
        else:
            was, self.writer = self.writer, fn
            (reactor.removeWriter if fn is None else reactor.addWriter)(self)
        return was is not None

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "polyloop"

    def doRead(self) -> None:
        if self.reader is not None:
            self._run(self.reader, ())

    def doWrite(self) -> None:
        if self.writer is not None:
            self._run(self.writer, ())

    def connectionLost(self, reason: object) -> None:
        # Also called by disconnectAll() at the reactor's shutdown, which comes after
        # crash() among the shutdown triggers: the reactor is no longer running then.
        wanted = [fn for fn in (self.reader, self.writer) if fn is not None]
        if not wanted or not self.reactor.running:
            return
        if self.reader is not None:
            self.reactor.addReader(self)
        if self.writer is not None:
            self.reactor.addWriter(self)
        for fn in wanted:
            self._run(fn, ())
