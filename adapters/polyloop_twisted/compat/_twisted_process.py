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
  ``ValueError``: Popen, under ``subprocess_exec``, has no way to give a child extra
  pipes.

``usePTY`` (``PTYProcessTransport``) is Twisted's ``PTYProcess``: a pseudo-terminal from
``pty.openpty()`` (or the ``(master, slave, ttyname)`` given), its slave the child's fds
0, 1 and 2 (Popen's ``stdin``/``stdout``/``stderr``) and its controlling terminal in a
session of its own; the parent closes the slave once the child runs, and reads and
writes the master through the session's ``connect_read_pipe``/``connect_write_pipe``
(the master is a character device; the writing transport has a ``dup`` of it, so each
transport owns one fd). What the child writes comes as ``childDataReceived(1, data)``;
the master's end (``EIO`` once no process has the slave open: the core's pipe
transports and asyncio's read it as EOF) is not told to the protocol (no
``childConnectionLost``, as Twisted's), and ``processEnded`` waits for it and for the
child to be reaped.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import pty
import signal
import subprocess
import termios
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, cast

# Twisted at module level, on purpose: loaded only through polyloop_twisted.compat's
# reactor (see _twisted_transport.py); none of these installs a reactor.
from twisted.internet import error, interfaces
from twisted.python import log as twisted_log
from twisted.python.failure import Failure
from zope.interface import implementer  # type: ignore[import-untyped]

import polyloop

from ._twisted_udp import run_on_session

__all__ = ["PTYProcessTransport", "ProcessTransport", "spawn_process"]

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

    #: Where a child that could not start tells why (its stderr), and the pipes whose
    #: ``childConnectionLost`` follows.
    _error_fd = 2
    _lost_fds: tuple[int, ...] = (0, 1, 2)

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
            elif what == "lose":
                self.loseConnection()
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
                (self._error_fd, f"spawnProcess could not start the child: {exc!r}\n".encode()),
            ),
            *(("childConnectionLost", (fd,)) for fd in self._lost_fds),
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


def _take_terminal() -> None:
    """Popen's ``preexec_fn`` for a child on a pty, run in the child once Popen made the
    slave its fds 0, 1 and 2: a session of its own whose controlling terminal the pty
    is (Twisted's ``PTYProcess._setupChild``: ``setsid``, then ``TIOCSCTTY``; without
    it the child's ``/dev/tty`` cannot be opened and the terminal's ``SIGHUP``,
    ``SIGINT``... do not reach it).

    ``setsid`` here, not Popen's ``start_new_session``: gevent's ``Popen`` (the one
    ``subprocess.Popen`` is after ``patch_all()``) calls ``setsid`` *after*
    ``preexec_fn``, so ``TIOCSCTTY`` would fail there (``EPERM``: not a session leader).
    ``preexec_fn`` is not safe with threads because Python code in a forked child can
    wait for a lock another thread held at the fork (an import, logging); this runs two
    system calls on modules imported at load time, and takes no such lock."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # 0: do not steal a terminal another session has


class _MasterEnd(polyloop.Protocol):
    """The protocol of one of the two transports on a pty's master (reading, writing):
    hands what it reads, its flow control and its end to the ``PTYProcessTransport``."""

    def __init__(self, owner: PTYProcessTransport, reading: bool) -> None:
        self.owner = owner
        self.reading = reading

    def data_received(self, data: bytes) -> None:
        self.owner._master_data(data)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        # exc is EIO on asyncio's read pipe (the core's reads EIO as EOF): the normal end
        # of a pty whose slave no process has open any more, as for Twisted.
        self.owner._master_lost(self.reading)

    def pause_writing(self) -> None:
        self.owner.pause_writing()

    def resume_writing(self) -> None:
        self.owner.resume_writing()


class PTYProcessTransport(ProcessTransport):
    """The transport of ``spawnProcess(..., usePTY=True)``, Twisted's ``PTYProcess``:
    the child's fds 0, 1 and 2 are one terminal, so ``write``/``writeSequence`` go to
    it, what the child writes (its echo too) comes as ``childDataReceived(1, data)``,
    and there are no pipes to close one by one: ``closeStdin``/``closeStdout``/
    ``closeStderr`` do nothing, ``closeChildFD`` and ``writeToChild`` raise
    ``NotImplementedError`` (all as Twisted's), ``loseConnection`` closes the master
    once what was written is flushed (the child then gets the terminal's ``SIGHUP``).
    No ``childConnectionLost``; ``processEnded`` comes once the child was reaped *and*
    the master closed (at ``EIO``, when no process has the slave open any more, or
    after ``loseConnection``)."""

    _error_fd = 1
    _lost_fds = ()

    def __init__(self, reactor: Any, protocol: Any, slave: int) -> None:
        super().__init__(reactor, protocol)
        self._slave: int | None = slave
        self._reader: Any = None
        self._writer: Any = None
        self._master_open = True
        self._losing = False
        self._returncode: int | None = None

    async def _connect_master(self, session: polyloop.Session, master: int) -> None:
        """Read and write ``master``: the reading transport owns it, the writing one a
        ``dup`` of it (each transport closes its own fd at its end; the terminal hangs
        up once both are closed)."""
        try:
            dup = os.dup(master)
        except OSError:
            os.close(master)
            raise
        try:
            self._reader, _ = await session.connect_read_pipe(
                lambda: _MasterEnd(self, reading=True), master
            )
        except (TypeError, ValueError):  # refused before the transport took the fd
            os.close(master)
            os.close(dup)
            raise
        # Not read until connection_made: the master is connected before the child
        # starts, and a child that writes at once (Twisted's test_processExitedWithSignal)
        # could reach childDataReceived before makeConnection gave the protocol its
        # transport -- its AttributeError closed the master and the child died of SIGHUP
        # instead of the signal the test sent (seen once under load). What it writes
        # waits in the terminal meanwhile, as it does for Twisted's PTYProcess, which
        # starts reading only after makeConnection.
        self._reader.pause_reading()
        try:
            self._writer, _ = await session.connect_write_pipe(
                lambda: _MasterEnd(self, reading=False), dup
            )
        except (TypeError, ValueError):
            os.close(dup)
            self._reader.close()
            raise

    def _close_slave(self) -> None:
        slave, self._slave = self._slave, None
        if slave is not None:
            os.close(slave)  # the child has its own copies (Twisted closes it here too)

    def connection_made(self, transport: Any) -> None:
        self._close_slave()
        super().connection_made(transport)
        if self._reader is not None:
            self._reader.resume_reading()  # paused in _connect_master

    def _failed_to_start(self, exc: BaseException) -> None:
        self._close_slave()
        self._drop_master()
        super()._failed_to_start(exc)

    def _drop_master(self) -> None:
        # close(), not abort(), for the reader: asyncio's read-pipe transport has no
        # abort() (polyloop_asyncio's ReadPipe.abort calls it); a read pipe drops nothing.
        if self._reader is not None:
            self._reader.close()
        if self._writer is not None:
            self._writer.abort()

    def _master_data(self, data: bytes) -> None:
        proto = self.proto
        if proto is None:
            return
        try:
            proto.childDataReceived(1, data)
        except Exception:
            # Twisted's reactor disconnects a descriptor whose doRead raised.
            twisted_log.err(None, "while calling childDataReceived:")  # type: ignore[no-untyped-call]
            self._drop_master()

    def _master_lost(self, reading: bool) -> None:
        if reading:
            self._reader = None
            if self._writer is not None:
                self._writer.abort()  # the terminal is gone: nothing left to write to
        else:
            self._writer = None
            if self.producer is not None:
                producer, self.producer = self.producer, None
                producer.stopProducing()
            if self._losing and self._reader is not None:
                self._reader.close()  # loseConnection: flushed, now close the master
        if self._reader is None and self._writer is None and self._master_open:
            self._master_open = False
            self._maybe_ended()

    def process_exited(self) -> None:
        assert self._t is not None
        self._returncode = self._t.get_returncode()
        super().process_exited()

    def connection_lost(self, exc: BaseException | None) -> None:
        # The child was reaped (it has no pipes): processEnded waits for the master.
        self._maybe_ended()

    def _maybe_ended(self) -> None:
        if self._master_open or self._returncode is None or self.proto is None:
            return
        proto, self.proto = self.proto, None
        try:
            proto.processEnded(Failure(_reason(self._returncode)))  # type: ignore[no-untyped-call]
        except Exception:
            twisted_log.err(None, "while calling processEnded:")  # type: ignore[no-untyped-call]

    def _pipe(self, fd: int) -> Any:
        if self._t is None:
            return None
        return self._writer if fd == 0 else self._reader if fd == 1 else None

    def writeToChild(self, childFD: int, data: bytes) -> None:
        """``NotImplementedError``, as Twisted's ``PTYProcess``: use ``write``."""
        raise NotImplementedError("a process on a pty has one terminal: use write()")

    def closeChildFD(self, childFD: int) -> None:
        """``NotImplementedError``, as Twisted's ``PTYProcess``."""
        raise NotImplementedError("a process on a pty has one terminal: use loseConnection()")

    def closeStdin(self) -> None:
        """Nothing, as Twisted's ``PTYProcess``: a terminal's input cannot be closed
        without its output (``loseConnection`` closes both)."""

    def closeStdout(self) -> None:
        """Nothing, as ``closeStdin``."""

    def closeStderr(self) -> None:
        """Nothing, as ``closeStdin``."""

    def loseConnection(self) -> None:
        """Stop reading, and close the master once what was written is flushed: the
        child gets ``SIGHUP``; ``processEnded`` follows once it was reaped."""
        if self._pending is not None:
            self._pending.append(("lose", None))
            return
        if self._losing:
            return
        self._losing = True
        if self._reader is not None:
            self._reader.pause_reading()
        if self._writer is not None:
            self._writer.close()
        elif self._reader is not None:
            self._reader.close()


def spawn_process(
    reactor: Any,
    processProtocol: Any,
    executable: str | bytes | os.PathLike[str],
    args: Sequence[str | bytes] = (),
    env: Mapping[Any, Any] | None = _NO_ENV,
    path: str | bytes | os.PathLike[str] | None = None,
    uid: int | None = None,
    gid: int | None = None,
    usePTY: bool | int | tuple[int, int, Any] | list[Any] = False,
    childFDs: Mapping[int, Any] | None = None,
) -> ProcessTransport:
    """``IReactorProcess.spawnProcess`` on ``reactor``'s session: run ``executable``
    with ``args`` (``args[0]`` is the child's ``argv[0]``; Twisted's convention),
    ``env`` (Twisted's default ``{}`` is an empty environment on POSIX, ``None`` this
    process's), in directory ``path``, as ``uid``/``gid``, on pipes or, with ``usePTY``
    (true, or Twisted's ``(master, slave, ttyname)``), on a pseudo-terminal. Returns the
    ``ProcessTransport`` (a ``PTYProcessTransport`` with ``usePTY``);
    ``processProtocol.makeConnection`` comes once the child runs. See this module's
    docstring for ``childFDs`` and ``usePTY``."""
    if not interfaces.IProcessProtocol.providedBy(processProtocol):
        raise TypeError(f"expected a Twisted ProcessProtocol, not {processProtocol!r}")
    if usePTY:
        if childFDs is not None:
            raise ValueError("Using childFDs is not supported with usePTY=True.")  # Twisted's
        stdin = stdout = stderr = None
    else:
        stdin, stdout, stderr = _stdio(childFDs)
    argv: list[Any] = list(args) or [executable]
    for arg in (executable, *argv):
        if not isinstance(arg, (str, bytes, os.PathLike)):
            raise TypeError(f"arguments must be str or bytes, not {type(arg).__name__}")
    environ: Any = os.environ if env is None else dict(env)
    _find_program(executable, environ, path)
    extra: dict[str, Any] = {}
    if uid is not None:
        extra["user"] = uid
    if gid is not None:
        extra["group"] = gid
    cwd: Any = path
    transport: ProcessTransport
    master: int | None = None
    if usePTY:
        if isinstance(usePTY, (tuple, list)):
            master, stdin, _ttyname = usePTY  # Twisted's (master, slave, ttyname)
        else:
            master, stdin = pty.openpty()
        stdout = stderr = stdin
        extra["preexec_fn"] = _take_terminal
        transport = PTYProcessTransport(reactor, processProtocol, stdin)
    else:
        transport = ProcessTransport(reactor, processProtocol)

    async def start(session: polyloop.Session) -> None:
        try:
            if master is not None:
                await cast(PTYProcessTransport, transport)._connect_master(session, master)
            await session.subprocess_exec(
                lambda: transport, argv[0], *argv[1:], executable=executable,
                stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, env=environ, **extra,
            )  # fmt: skip
        except Exception as exc:
            transport._failed_to_start(exc)

    run_on_session(reactor, lambda session: session.spawn(start(session)))
    return transport
