"""``IReactorProcess.spawnProcess`` on ``polyloop.subprocess_exec``: a Twisted
``ProcessProtocol`` runs a child process on any polyloop backend.

Rule: this file maps the calls of one child, polyloop's ``SubprocessProtocol`` onto
Twisted's ``ProcessProtocol`` and back, and nothing else; the child is started, read,
written and reaped by the session (``Session.subprocess_exec``), never here.

The two call orders are the same, which is why the mapping is one-to-one:
``connection_made`` -> ``makeConnection(transport)`` (``connectionMade``);
``pipe_data_received(fd, data)`` -> ``childDataReceived(fd, data)`` (``outReceived``,
``errReceived``); ``pipe_connection_lost(fd, exc)`` -> ``childConnectionLost(fd)``
(``inConnectionLost``...); ``process_exited()`` -> ``processExited(reason)``;
``connection_lost`` -> ``processEnded(reason)``, last, once the child was reaped *and*
every pipe closed (Twisted's rule too). ``reason`` is a ``Failure`` of ``ProcessDone``
(exit status 0) or ``ProcessTerminated`` (``exitCode``, or ``signal`` for a child a
signal killed, and ``status``: the raw wait status, as Twisted's). An exception one of
the protocol's methods raises goes to Twisted's log (``log.err``), as Twisted's reactor
sends it.

Where Twisted and polyloop differ:

- Twisted forks (or ``posix_spawnp``s) inside ``spawnProcess``, so ``transport.pid`` is
  set when it returns; ``subprocess_exec`` is a coroutine, so here the child starts one
  iteration later: ``pid`` is ``None`` until ``makeConnection`` (which Twisted calls
  after the fork too). What is written, closed or signalled before then is kept and
  done, in order, when the child runs. As in Twisted, ``pid`` is ``None`` again once
  the child was reaped.
- A program that cannot be found or run raises ``FileNotFoundError``/``PermissionError``
  from ``spawnProcess`` itself, as Twisted's ``posix_spawnp`` path does: it is looked
  up here, on the child's ``PATH`` (from ``env``), before the child is started. A child
  that cannot start for another reason (a missing ``path``, a ``uid`` that cannot be
  taken) ends as Twisted's fork path tells it: connected, the error on its stderr, exit
  status 1.
- ``childFDs``: only the usual three, each a pipe in Twisted's letters (0: ``"w"``, 1
  and 2: ``"r"``) or a parent fd (an ``int``, as ``{0: 0, 1: 1, 2: 2}``). A child fd
  that is absent (Twisted closes it in the child) or any fd beyond 2 is refused with
  ``ValueError``, as is ``usePTY`` (``NotImplementedError``): Popen, under
  ``subprocess_exec``, has no way to give a child extra pipes or a terminal here.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

# Twisted at module level, on purpose: loaded only through polyloop_twisted.compat's
# reactor (see _twisted_transport.py); none of these installs a reactor.
from twisted.internet import error, interfaces
from twisted.python import log as twisted_log
from twisted.python.failure import Failure
from zope.interface import implementer  # type: ignore[import-untyped]

import polyloop

from ._twisted_udp import run_on_session

__all__ = ["ProcessTransport", "spawn_process"]

log = logging.getLogger("polyloop")

# Twisted's default ``env={}``: an empty environment on POSIX (``None``: this process's).
_NO_ENV: Mapping[Any, Any] = MappingProxyType({})
_DEFAULT_FDS = {0: "w", 1: "r", 2: "r"}
_DIRECTION = {0: "w", 1: "r", 2: "r"}


def _stdio(childFDs: Mapping[int, Any] | None) -> tuple[Any, Any, Any]:
    """Popen's ``stdin``/``stdout``/``stderr`` for Twisted's ``childFDs``."""
    fds = dict(_DEFAULT_FDS if childFDs is None else childFDs)
    if not isinstance(childFDs, (Mapping, type(None))):
        raise TypeError(f"childFDs must be a dict, not {type(childFDs).__name__}")
    if set(fds) != {0, 1, 2}:
        raise ValueError(
            "polyloop_twisted.compat's spawnProcess takes childFDs for exactly fds 0, 1"
            f" and 2 (each 'w'/'r' as Twisted's default, or a parent fd), not {fds!r}:"
            " extra child fds and closed ones are not supported"
        )
    out: list[Any] = []
    for fd in (0, 1, 2):
        value = fds[fd]
        if value == _DIRECTION[fd]:
            out.append(subprocess.PIPE)
        elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            out.append(value)
        else:
            raise ValueError(
                f"childFDs[{fd}] must be {_DIRECTION[fd]!r} (a pipe) or a parent fd, not {value!r}"
            )
    return out[0], out[1], out[2]


def _find_program(executable: Any, env: Mapping[Any, Any] | None, path: Any) -> None:
    """Raise what ``posix_spawnp`` would if ``executable`` cannot be run: it is looked
    up on ``env``'s ``PATH`` unless it has a ``/``."""
    name = os.fsdecode(executable)
    if os.path.dirname(name):
        candidates = [os.path.join(os.fsdecode(path), name) if path is not None else name]
    else:
        candidates = [os.path.join(d, name) for d in os.get_exec_path(env)]
    denied = False
    for candidate in candidates:
        if os.path.exists(candidate):
            if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
                return
            denied = True
    if denied:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), name)
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)


def _reason(returncode: int) -> BaseException:
    """Twisted's ``_getReason``, from polyloop's return code (``-N``: signal N)."""
    if returncode < 0:
        return error.ProcessTerminated(None, -returncode, -returncode)  # type: ignore[no-untyped-call]
    status = returncode << 8
    if returncode:
        return error.ProcessTerminated(returncode, None, status)  # type: ignore[no-untyped-call]
    return error.ProcessDone(status)  # type: ignore[no-untyped-call]


@implementer(interfaces.IProcessTransport, interfaces.IConsumer, interfaces.IPushProducer)
class ProcessTransport(polyloop.SubprocessProtocol):
    """What ``spawnProcess`` returns and a ``ProcessProtocol``'s ``transport`` is:
    ``pid``, ``write``/``writeSequence``/``writeToChild(0, data)`` (stdin),
    ``closeStdin``/``closeStdout``/``closeStderr``/``closeChildFD(fd)``,
    ``loseConnection`` (all three), ``signalProcess('TERM'|'KILL'|'INT'|'HUP'|... or an
    int)``, ``registerProducer`` (stdin as a consumer), ``pauseProducing``/
    ``resumeProducing`` (reading stdout and stderr), and ``status`` (the wait status,
    once reaped). It is also the polyloop ``SubprocessProtocol`` of the child."""

    def __init__(self, reactor: Any, protocol: Any) -> None:
        #: The compat ``Reactor`` the child runs on.
        self.reactor = reactor
        #: The Twisted ``ProcessProtocol`` (``None`` after ``processEnded``).
        self.proto: Any = protocol
        #: The child's process id: ``None`` until it runs and once it was reaped.
        self.pid: int | None = None
        #: The raw wait status once the child was reaped (``None`` before).
        self.status: int | None = None
        self._t: polyloop.SubprocessTransport | None = None
        self._pending: list[tuple[str, Any]] | None = []
        self._closed_fds: set[int] = set()
        self._reaped = False
        self.producer: Any = None
        self.streamingProducer = False
        self._write_paused = False
        self._writes = 0

    def __repr__(self) -> str:
        return f"<polyloop_twisted.compat process pid={self.pid} {self.proto!r}>"

    # --- the polyloop side ---

    def connection_made(self, transport: Any) -> None:
        self._t = transport
        self.pid = transport.get_pid()
        pending, self._pending = self._pending, None
        for what, arg in pending or ():
            if what == "write":
                self._write(arg)
            elif what == "close":
                self.closeChildFD(arg)
            elif what == "signal":
                self._signal(arg)
        self.proto.makeConnection(self)

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        proto = self.proto
        if proto is None:
            return
        try:
            proto.childDataReceived(fd, data)
        except Exception:
            # Twisted's reactor drops the pipe whose reader raised (its connectionLost
            # follows, so childConnectionLost(fd) does here too).
            twisted_log.err(None, "while calling childDataReceived:")  # type: ignore[no-untyped-call]
            self.closeChildFD(fd)

    def pipe_connection_lost(self, fd: int, exc: BaseException | None) -> None:
        self._closed_fds.add(fd)
        if fd == 0 and self.producer is not None:
            producer, self.producer = self.producer, None
            producer.stopProducing()
        proto = self.proto
        if proto is not None:
            try:
                proto.childConnectionLost(fd)
            except Exception:
                twisted_log.err(None, "while calling childConnectionLost:")  # type: ignore[no-untyped-call]

    def process_exited(self) -> None:
        assert self._t is not None
        returncode = self._t.get_returncode()
        assert returncode is not None
        reason = _reason(returncode)
        self.status = reason.status  # type: ignore[attr-defined]
        self.pid = None
        self._reaped = True
        proto = self.proto
        if proto is not None:
            try:
                proto.processExited(Failure(reason))  # type: ignore[no-untyped-call]
            except Exception:
                twisted_log.err(None, "while calling processExited:")  # type: ignore[no-untyped-call]

    def connection_lost(self, exc: BaseException | None) -> None:
        proto, self.proto = self.proto, None
        if proto is None or self.status is None:
            return
        assert self._t is not None
        returncode = self._t.get_returncode()
        assert returncode is not None
        try:
            proto.processEnded(Failure(_reason(returncode)))  # type: ignore[no-untyped-call]
        except Exception:
            twisted_log.err(None, "while calling processEnded:")  # type: ignore[no-untyped-call]

    def pause_writing(self) -> None:
        self._write_paused = True
        if self.producer is not None and self.streamingProducer:
            self.producer.pauseProducing()

    def resume_writing(self) -> None:
        self._write_paused = False
        producer = self.producer
        if producer is None:
            return
        if self.streamingProducer:
            producer.resumeProducing()
        else:
            self._pull()

    def _failed_to_start(self, exc: BaseException) -> None:
        """``subprocess_exec`` failed after ``spawnProcess`` checked the program (the
        directory ``path`` is missing, ``uid`` cannot be taken, fork failed...). Told as
        Twisted's fork path tells a child that failed before its exec: the protocol is
        connected, the error comes on the child's stderr, the pipes close and the
        "child" ends with exit status 1 (``ProcessTerminated``)."""
        self._pending = None
        self._reaped = True
        self.status = 1 << 8
        proto = self.proto
        if proto is None:
            return
        reason = _reason(1)
        calls: list[tuple[str, tuple[Any, ...]]] = [
            ("makeConnection", (self,)),
            (
                "childDataReceived",
                (2, f"spawnProcess could not start the child: {exc!r}\n".encode()),
            ),
            ("childConnectionLost", (0,)),
            ("childConnectionLost", (1,)),
            ("childConnectionLost", (2,)),
            ("processExited", (Failure(reason),)),  # type: ignore[no-untyped-call]
        ]
        for name, args in calls:
            try:
                getattr(proto, name)(*args)
            except Exception:
                twisted_log.err(None, f"while calling {name}:")  # type: ignore[no-untyped-call]
        self.proto = None
        try:
            proto.processEnded(Failure(reason))  # type: ignore[no-untyped-call]
        except Exception:
            twisted_log.err(None, "while calling processEnded:")  # type: ignore[no-untyped-call]

    # --- IProcessTransport ---

    def _pipe(self, fd: int) -> Any:
        if self._t is None or fd in self._closed_fds:
            return None
        return self._t.get_pipe_transport(fd)

    def write(self, data: bytes) -> None:
        """Write ``data`` to the child's stdin (dropped once stdin is closed, or if it
        is not a pipe; ``str`` raises ``TypeError``)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"Data must be bytes, not {type(data).__name__}")
        if self._pending is not None:
            self._pending.append(("write", bytes(data)))
        else:
            self._write(data)

    def _write(self, data: bytes) -> None:
        pipe = self._pipe(0)
        if pipe is not None and not pipe.is_closing() and data:
            self._writes += 1
            pipe.write(data)

    def writeSequence(self, seq: Iterable[bytes]) -> None:
        """Write each item of ``seq`` to stdin."""
        for data in seq:
            self.write(data)

    def writeToChild(self, childFD: int, data: bytes) -> None:
        """Write to the child's ``childFD``: only 0 (stdin) is a pipe the parent writes."""
        if childFD != 0:
            raise KeyError(childFD)
        self.write(data)

    def closeChildFD(self, childFD: int) -> None:
        """Close the pipe of ``childFD`` (stdin: after what is queued was written);
        ``childConnectionLost(childFD)`` follows. A no-op if it is closed already."""
        if self._pending is not None:
            self._pending.append(("close", childFD))
            return
        pipe = self._pipe(childFD)
        if pipe is not None:
            pipe.close()

    def closeStdin(self) -> None:
        """``closeChildFD(0)``: the child sees EOF on its stdin."""
        self.closeChildFD(0)

    def closeStdout(self) -> None:
        """``closeChildFD(1)``."""
        self.closeChildFD(1)

    def closeStderr(self) -> None:
        """``closeChildFD(2)``."""
        self.closeChildFD(2)

    def loseConnection(self) -> None:
        """Close stdin, stderr and stdout (the child is not signalled)."""
        self.closeStdin()
        self.closeStderr()
        self.closeStdout()

    def signalProcess(self, signalID: str | int) -> None:
        """Send a signal: a name without ``SIG`` (``"TERM"``, ``"KILL"``, ``"INT"``,
        ``"HUP"``...) or a number. ``ProcessExitedAlready`` once the child was reaped;
        ``ValueError`` for an unknown name."""
        if isinstance(signalID, str):
            number = getattr(signal, f"SIG{signalID}", None)
            if not isinstance(number, int):
                raise ValueError(f"unknown signal name {signalID!r} (use 'TERM', 'KILL'...)")
            signalID = number
        if self._reaped or (self._pending is None and self._t is None):
            raise error.ProcessExitedAlready()
        if self._pending is not None:
            self._pending.append(("signal", signalID))
        else:
            self._signal(signalID)

    def _signal(self, number: int) -> None:
        assert self._t is not None
        try:
            self._t.send_signal(number)
        except ProcessLookupError:
            raise error.ProcessExitedAlready() from None

    def getHost(self) -> Any:
        """Not an address: ``NotImplementedError``, as Twisted's process transport."""
        raise NotImplementedError("a process has no address")

    def getPeer(self) -> Any:
        """Not an address: ``NotImplementedError``, as Twisted's process transport."""
        raise NotImplementedError("a process has no address")

    # --- IConsumer (stdin) and IPushProducer (stdout, stderr) ---

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """Have ``producer`` write stdin: paused and resumed with the pipe's buffer
        (``streaming``), or asked for more whenever it is empty. Without a stdin pipe,
        ``producer.stopProducing()`` at once (Twisted's rule)."""
        pipe = self._pipe(0)
        if pipe is None:
            producer.stopProducing()
            return
        if self.producer is not None:
            raise RuntimeError(
                f"Cannot register producer {producer}, because producer {self.producer}"
                " was never unregistered."
            )
        self.producer = producer
        self.streamingProducer = bool(streaming)
        if streaming:
            if self._write_paused:
                producer.pauseProducing()
        else:
            pipe.set_write_buffer_limits(0, 0)  # "paused" until the buffer is empty
            self._pull()

    def unregisterProducer(self) -> None:
        """Stop consuming from the producer."""
        producer, self.producer = self.producer, None
        pipe = self._pipe(0)
        if producer is not None and not self.streamingProducer and pipe is not None:
            pipe.set_write_buffer_limits()
        self.streamingProducer = False

    def _pull(self) -> None:
        producer = self.producer
        if producer is None or self.streamingProducer or self._write_paused:
            return
        before = self._writes
        producer.resumeProducing()
        if self._writes != before:
            self.reactor.callLater(0, self._pull)

    def pauseProducing(self) -> None:
        """Stop reading the child's stdout and stderr (it blocks once a pipe is full)."""
        for fd in (1, 2):
            pipe = self._pipe(fd)
            if pipe is not None:
                pipe.pause_reading()

    def resumeProducing(self) -> None:
        """Read the child's stdout and stderr again."""
        for fd in (1, 2):
            pipe = self._pipe(fd)
            if pipe is not None:
                pipe.resume_reading()

    def stopProducing(self) -> None:
        """``loseConnection()``."""
        self.loseConnection()


def spawn_process(
    reactor: Any,
    processProtocol: Any,
    executable: str | bytes | os.PathLike[str],
    args: Sequence[str | bytes] = (),
    env: Mapping[Any, Any] | None = _NO_ENV,
    path: str | bytes | os.PathLike[str] | None = None,
    uid: int | None = None,
    gid: int | None = None,
    usePTY: bool | int = False,
    childFDs: Mapping[int, Any] | None = None,
) -> ProcessTransport:
    """``IReactorProcess.spawnProcess`` on ``reactor``'s session: run ``executable``
    with ``args`` (``args[0]`` is the child's ``argv[0]``; Twisted's convention),
    ``env`` (Twisted's default ``{}`` is an empty environment on POSIX, ``None`` this
    process's), in directory ``path``, as ``uid``/``gid``. Returns the
    ``ProcessTransport``; ``processProtocol.makeConnection`` comes once the child
    runs. See this module's docstring for ``childFDs`` and ``usePTY``."""
    if not interfaces.IProcessProtocol.providedBy(processProtocol):
        raise TypeError(f"expected a Twisted ProcessProtocol, not {processProtocol!r}")
    if usePTY:
        raise NotImplementedError(
            "usePTY: polyloop_twisted.compat's spawnProcess runs children on pipes only"
        )
    stdin, stdout, stderr = _stdio(childFDs)
    argv: list[Any] = list(args) or [executable]
    for arg in (executable, *argv):
        if not isinstance(arg, (str, bytes, os.PathLike)):
            raise TypeError(f"arguments must be str or bytes, not {type(arg).__name__}")
    environ: Any = os.environ if env is None else dict(env)
    _find_program(executable, environ, path)
    transport = ProcessTransport(reactor, processProtocol)
    extra: dict[str, Any] = {}
    if uid is not None:
        extra["user"] = uid
    if gid is not None:
        extra["group"] = gid
    cwd: Any = path

    async def start(session: polyloop.Session) -> None:
        try:
            await session.subprocess_exec(
                lambda: transport, argv[0], *argv[1:], executable=executable,
                stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, env=environ, **extra,
            )  # fmt: skip
        except Exception as exc:
            transport._failed_to_start(exc)

    run_on_session(reactor, lambda session: session.spawn(start(session)))
    return transport
