"""The contract's clauses as data: one stable id, one sentence and one tier each.

Rule: a clause is a promise of the contract, in the contract's words; everything that
speaks of a rule names it by its id here. Checks and mutants declare the clauses they
enforce (``@check(..., clauses=[...])``, ``@mutant(..., clauses=[...])``), the referee
prints the id and the sentence with every failure, docstrings of the core tag the
sentences they state (``[transport.close.flushes]``), and the rule table in
``docs/rules.md`` is generated from here::

    python -m polyloop_conformance.rules --write-docs   # rewrite docs/rules.md
    python -m polyloop_conformance.rules --list         # checks and clauses, by tier

``tests/test_rules.py`` fails when a clause has no check, a check has no clause, a tag
names no clause, or the committed page differs from the generated one.

Tier 1 is what a new backend must pass first: the loop, readiness, timer, thread and
run contract the core builds everything else on (``polyloop conformance --tier 1``).
Tier 2 is the rest: transports, streams, tasks, TLS, and what the core builds on tier 1.
An id never changes meaning; a clause that goes away leaves its id unused.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CLAUSES",
    "TAG",
    "Clause",
    "check_ids",
    "clause",
    "clauses_of_tier",
    "list_catalogue",
    "rules_markdown",
    "tags_in",
]


@dataclass(frozen=True)
class Clause:
    """One promise of the contract."""

    #: ``layer.subject[.detail]``, lower case, stable.
    id: str
    #: 1: the loop contract a new backend must pass first; 2: the rest.
    tier: int
    #: The promise, one sentence, in the contract's words.
    sentence: str

    @property
    def layer(self) -> str:
        """The first part of the id (``transport``, ``loop``, ``stream``...)."""
        return self.id.split(".", 1)[0]

    def __str__(self) -> str:
        return f"[{self.id}] {self.sentence}"


_ALL = [
    # --- tier 1: the loop, readiness, timers, threads and run the core builds on ---
    Clause(
        "run.returns_main_result",
        1,
        "run(main, *args) passes the arguments to main and returns main's result.",
    ),
    Clause(
        "run.propagates_main_exception",
        1,
        "An exception raised by main propagates out of run() unchanged (the same object).",
    ),
    Clause(
        "run.fresh_each_time",
        1,
        "Each run() gets a fresh loop and a session of its own; a second run works like"
        " the first.",
    ),
    Clause(
        "run.nothing_global_stays",
        1,
        "After run() returns, its session is never current again: current_backend() "
        "outside a run raises RuntimeError.",
    ),
    Clause(
        "run.nested_refused",
        1,
        "run() called inside a running loop raises RuntimeError (it would block that loop).",
    ),
    Clause(
        "run.needs_a_function",
        1,
        "run(main(arg)) -- a coroutine object instead of a function -- raises TypeError.",
    ),
    Clause(
        "run.disposes_everything",
        1,
        "run() disposes of everything the run made: no fd, thread or ResourceWarning "
        "outlives it, also when main raises.",
    ),
    Clause(
        "run.end_cancels_tasks",
        1,
        "A task still waiting when main returns is cancelled, and its clean-up has run,"
        " before run() returns.",
    ),
    Clause(
        "run.pending_timers_never_fire",
        1,
        "A call_later still pending when run() returns never fires afterwards.",
    ),
    Clause(
        "run.ctrl_c",
        1,
        "Ctrl-C (SIGINT) while main waits cancels main: its finally runs, the session "
        "ends, and run() raises KeyboardInterrupt.",
    ),
    Clause(
        "run.callback_exit",
        1,
        "SystemExit or KeyboardInterrupt raised in a callback, whatever scheduled it, "
        "cancels main: it cleans up, the session ends, and run() raises that exception.",
    ),
    Clause(
        "session.current_everywhere",
        1,
        "polyloop.current_backend() is the running session in coroutines, tasks and "
        "every protocol callback, and they all see the same session.",
    ),
    Clause(
        "session.ends_with_run",
        1,
        "A session's on_close hooks run once, when its run ends.",
    ),
    Clause(
        "loop.time.monotonic",
        1,
        "time() never goes back, advances across a sleep, and is the clock call_later uses.",
    ),
    Clause(
        "loop.call_soon.fifo",
        1,
        "call_soon callbacks run in the order they were scheduled, with their arguments.",
    ),
    Clause(
        "loop.call_soon.never_inline",
        1,
        "call_soon never runs the callback before it returns.",
    ),
    Clause(
        "loop.call_soon.cancel",
        1,
        "A call_soon handle cancelled before the loop gets to it never runs.",
    ),
    Clause(
        "loop.callback.context",
        1,
        "call_soon and call_later callbacks run in a copy of the caller's context.",
    ),
    Clause(
        "loop.callback.error_logged",
        1,
        "An exception raised by a scheduled callback is logged, and the loop goes on.",
    ),
    Clause(
        "loop.sleep_zero.yields",
        1,
        "sleep(0) yields to the loop: a callback scheduled just before it has run when "
        "it returns.",
    ),
    Clause(
        "loop.call_later.not_early",
        1,
        "call_later(d, fn) and sleep(d) wait at least d seconds, by time() and by the wall clock.",
    ),
    Clause(
        "loop.call_later.deadline_order",
        1,
        "call_later callbacks fire in deadline order, not in scheduling order.",
    ),
    Clause(
        "loop.call_later.cancel",
        1,
        "A cancelled call_later never fires.",
    ),
    Clause(
        "loop.call_later.arguments",
        1,
        "call_later and sleep: a negative delay runs as soon as possible, inf never; "
        "NaN is ValueError, a non-number TypeError.",
    ),
    Clause(
        "loop.call_soon_threadsafe.wakes",
        1,
        "call_soon_threadsafe from any thread wakes the loop, also one blocked in its "
        "poll; fn runs on the loop's thread.",
    ),
    Clause(
        "loop.call_soon_threadsafe.order",
        1,
        "Every call_soon_threadsafe runs, those made from one thread in the order made.",
    ),
    Clause(
        "loop.add_reader.while_ready",
        1,
        "add_reader/add_writer call fn whenever the fd is readable/writable, until removed.",
    ),
    Clause(
        "loop.remove_reader.never_after",
        1,
        "A removed reader or writer never runs again, also one whose readiness the loop"
        " saw already; remove_reader/remove_writer return whether it was watched.",
    ),
    Clause(
        "loop.add_reader.bad_fd",
        1,
        "add_reader/add_writer/remove_reader/remove_writer raise ValueError for what is"
        " not an fd.",
    ),
    Clause(
        "threads.run_in_thread.outcome",
        1,
        "run_in_thread(fn, *args) runs fn in another thread and returns its result, or "
        "raises its exception (the same object).",
    ),
    Clause(
        "threads.run_in_thread.concurrent",
        1,
        "Several run_in_thread calls run at once, and the loop stays responsive meanwhile.",
    ),
    Clause(
        "threads.run_in_thread.context",
        1,
        "run_in_thread runs fn in a copy of the caller's context.",
    ),
    Clause(
        "threads.end_fails_waiters",
        1,
        "When a session ends, every call blocked in from_thread fails with RuntimeError"
        " naming it, and call_soon_threadsafe after the end raises that RuntimeError.",
    ),
    # --- tier 2: protocols, transports, streams, TLS, tasks and the toolkit ---
    Clause(
        "run.end_loses_connections",
        2,
        "Every connection left open gets connection_lost, exactly once, before run() returns.",
    ),
    Clause(
        "run.end_order",
        2,
        "The end of a run goes in order: tasks cancelled, then servers closed, then "
        "connections lost, then on_close hooks.",
    ),
    Clause(
        "session.aclose_owned_refused",
        2,
        "aclose() of a session that run() owns raises RuntimeError (it ends with its run).",
    ),
    Clause(
        "session.graceful_shutdown",
        2,
        "Session.shutdown(grace) stops accepting, gives open connections grace seconds "
        "to end, then closes the rest cleanly.",
    ),
    Clause(
        "protocol.order",
        2,
        "connection_made is called first and once, connection_lost last and once; data "
        "and EOF come between.",
    ),
    Clause(
        "protocol.asyncio_compatible",
        2,
        "An unmodified asyncio.Protocol subclass works as a polyloop protocol.",
    ),
    Clause(
        "transport.set_protocol",
        2,
        "get_protocol() is the protocol; after set_protocol(new) the data goes to new, "
        "without a connection_made.",
    ),
    Clause(
        "protocol.data_path.direct",
        2,
        "data_received and eof_received are called by the transport's read path as the "
        "bytes arrive, not scheduled a loop iteration later.",
    ),
    Clause(
        "protocol.callback_error.aborts",
        2,
        "A data_received or eof_received that raises is logged, and the connection "
        "aborted with connection_lost(exc).",
    ),
    Clause(
        "protocol.flow_callback_error",
        2,
        "A pause_writing/resume_writing that raises is logged; write() does not raise it.",
    ),
    Clause(
        "transport.extra_info",
        2,
        "get_extra_info gives peername, sockname, socket and backend, agreeing on both "
        "ends, and the default for an unknown key.",
    ),
    Clause(
        "listen.port_zero",
        2,
        "listen_tcp on port 0 picks a free port; Server.addresses and Server.port report it.",
    ),
    Clause(
        "listen.all_interfaces",
        2,
        "listen_tcp(host=None) listens on all interfaces.",
    ),
    Clause(
        "listen.every_address",
        2,
        "listen_tcp on a name binds every address it resolves to, on one port.",
    ),
    Clause(
        "listen.ipv6",
        2,
        "listen_tcp and connect_tcp work on ::1, with IPv6 address tuples.",
    ),
    Clause(
        "listen.close_keeps_connections",
        2,
        "Server.close() stops accepting and leaves the open connections alone.",
    ),
    Clause(
        "listen.address_in_use",
        2,
        "listen_tcp or listen_unix on a taken address raises OSError(EADDRINUSE); a "
        "stale Unix socket file is replaced.",
    ),
    Clause(
        "listen.unix_file_removed",
        2,
        "Server.close() of a Unix listener removes its socket file.",
    ),
    Clause(
        "listen.factory_error_dropped",
        2,
        "A server protocol factory or connection_made that raises is logged, that "
        "connection dropped, and the server goes on.",
    ),
    Clause(
        "adopt.connection",
        2,
        "adopt_connection(factory, sock) makes a connected socket a transport like "
        "connect_tcp's: connection_made before it returns, TLS on either side.",
    ),
    Clause(
        "adopt.listening",
        2,
        "listen_sockets(factory, socks) serves sockets the caller bound like listen_tcp's; "
        "close() closes them.",
    ),
    Clause(
        "adopt.udp",
        2,
        "adopt_udp(factory, sock) makes a bound UDP socket an endpoint like open_udp's.",
    ),
    Clause(
        "adopt.bad_sockets",
        2,
        "What is not a socket raises TypeError, a closed or wrong-type socket ValueError, "
        "an unconnected stream socket OSError, the same on every backend.",
    ),
    Clause(
        "connect.refused",
        2,
        "connect_tcp/connect_unix to an address nobody listens on raises "
        "ConnectionRefusedError, after trying every address.",
    ),
    Clause(
        "connect.missing_path",
        2,
        "connect_unix to a path that does not exist raises FileNotFoundError.",
    ),
    Clause(
        "connect.connection_made_error",
        2,
        "A client protocol whose connection_made raises: connect raises that error, and"
        " the connection is aborted.",
    ),
    Clause(
        "arguments.validated",
        2,
        "Bad ports, hosts, factories and ssl arguments raise ValueError or TypeError "
        "before any I/O.",
    ),
    Clause(
        "errors.same_everywhere",
        2,
        "An error has the same type, errno and text on every backend.",
    ),
    Clause(
        "transport.write.bytes_only",
        2,
        "write() of anything not bytes-like raises TypeError, and the connection stays usable.",
    ),
    Clause(
        "transport.write.in_order",
        2,
        "write() never blocks; the bytes of many writes arrive whole and in order, in "
        "both directions, from either end.",
    ),
    Clause(
        "transport.write.copies",
        2,
        "write() copies or sends the data before it returns: reusing a bytearray at once is safe.",
    ),
    Clause(
        "transport.write.exact_bytes",
        2,
        "write(memoryview) sends exactly the view's bytes; writelines writes each item in turn.",
    ),
    Clause(
        "transport.write.empty",
        2,
        "An empty write sends nothing and does no harm.",
    ),
    Clause(
        "transport.write.after_close_noop",
        2,
        "A write after close(), after abort() or after the connection was lost is a "
        "silent no-op; nothing written after close() is sent.",
    ),
    Clause(
        "transport.close.flushes",
        2,
        "close() sends every byte already written, then calls connection_lost(None).",
    ),
    Clause(
        "transport.close.not_reentrant",
        2,
        "close() never calls connection_lost from inside itself; it comes later.",
    ),
    Clause(
        "transport.close.idempotent",
        2,
        "close() twice, or after the connection was lost, is a no-op: connection_lost runs once.",
    ),
    Clause(
        "transport.is_closing",
        2,
        "is_closing() is True at once after close() or abort(), also while buffered "
        "data flushes, and once the connection is lost.",
    ),
    Clause(
        "transport.close.peer_sees_eof",
        2,
        "The peer of a closed transport gets its data, then eof_received, then "
        "connection_lost(None).",
    ),
    Clause(
        "transport.abort.local_error",
        2,
        "abort() calls connection_lost(ConnectionAbortedError) later, once, never from "
        "inside abort().",
    ),
    Clause(
        "transport.abort.resets_peer",
        2,
        "abort() resets the connection: the peer sees a reset, not a clean EOF.",
    ),
    Clause(
        "transport.reset.not_eof",
        2,
        "An incoming reset is reported as an error "
        "(connection_lost(ConnectionResetError), receive() raising), never as a clean "
        "EOF.",
    ),
    Clause(
        "transport.abort.drops_buffer",
        2,
        "abort() drops the data still buffered, also after a close() that is still flushing.",
    ),
    Clause(
        "transport.abort.idempotent",
        2,
        "abort() twice, after close() or after the loss of the connection: "
        "connection_lost runs once.",
    ),
    Clause(
        "transport.can_write_eof",
        2,
        "can_write_eof() is True for TCP and Unix sockets, False for TLS.",
    ),
    Clause(
        "transport.write_eof.half_close",
        2,
        "write_eof() flushes, then half-closes: the peer gets every byte and EOF, and "
        "this side still reads.",
    ),
    Clause(
        "transport.write_eof.then_write_raises",
        2,
        "write() after write_eof() raises RuntimeError.",
    ),
    Clause(
        "protocol.eof_received.return_value",
        2,
        "eof_received returning true keeps the connection half-open, falsy closes it; "
        "TLS closes either way.",
    ),
    Clause(
        "transport.flow.pause_writing",
        2,
        "pause_writing() comes past the high-water mark, resume_writing() at the low "
        "one, alternating, starting with pause.",
    ),
    Clause(
        "transport.flow.buffer_size",
        2,
        "get_write_buffer_size() is 0 when idle and counts the bytes the kernel has not taken.",
    ),
    Clause(
        "transport.flow.limits_validated",
        2,
        "set_write_buffer_limits raises ValueError unless 0 <= low <= high.",
    ),
    Clause(
        "transport.pause_reading",
        2,
        "pause_reading() stops data_received until resume_reading(), also when called "
        "inside data_received; is_reading() follows and is False once closing.",
    ),
    Clause(
        "transport.pause_reading.pushes_back",
        2,
        "A transport that does not read stops reading its socket, so the kernel pushes "
        "back on the writer.",
    ),
    Clause(
        "datagram.sendto",
        2,
        "sendto(data, addr) arrives as one whole datagram (up to 65,507 bytes) with the"
        " sender's address; boundaries are kept.",
    ),
    Clause(
        "datagram.connected",
        2,
        "A connected endpoint sends to its remote without an address, and refuses "
        "another address; an unconnected one needs one.",
    ),
    Clause(
        "datagram.sendto.bytes_only",
        2,
        "sendto(str) raises TypeError, also after close().",
    ),
    Clause(
        "datagram.close",
        2,
        "close(): is_closing() at once, connection_lost(None) later and once; sendto "
        "after close() is a silent no-op.",
    ),
    Clause(
        "datagram.error_received",
        2,
        "A connected endpoint sending to a closed port gets error_received.",
    ),
    Clause(
        "unix.round_trip",
        2,
        "Unix sockets carry data both ways, with protocols, streams and TLS; "
        "Server.addresses is [path].",
    ),
    Clause(
        "tls.round_trip",
        2,
        "A verified TLS connection carries data both ways, with protocols and streams, "
        "and closes cleanly.",
    ),
    Clause(
        "tls.verification",
        2,
        "A certificate that does not verify (unknown CA, wrong host name) raises "
        "SSLCertVerificationError.",
    ),
    Clause(
        "tls.failed_handshake_hidden",
        2,
        "A connection whose TLS handshake fails never reaches the server's protocol.",
    ),
    Clause(
        "tls.extra_info",
        2,
        "TLS transports give ssl_object and the peer's peercert.",
    ),
    Clause(
        "tls.handshake_timeout",
        2,
        "A TLS handshake that does not finish fails after the handshake timeout: "
        "TimeoutError for start_tls, and the connection is closed: the peer reads EOF.",
    ),
    Clause(
        "tls.close_between_records",
        2,
        "A TLS peer that closes without close_notify after a whole record: the reader "
        "gets every byte, then a clean end, connection_lost(None).",
    ),
    Clause(
        "tls.truncated_record",
        2,
        "A TLS connection cut in the middle of a record: no byte of that record reaches "
        "the reader, no EOF, and connection_lost(ssl.SSLEOFError), whoever runs the TLS.",
    ),
    Clause(
        "tls.clean_close",
        2,
        "A TLS peer that closes cleanly (close_notify, then FIN) ends the connection "
        "cleanly, without an error.",
    ),
    Clause(
        "tls.start_tls",
        2,
        "start_tls upgrades a connection in place: the same protocol goes on receiving,"
        " and the bytes after go over TLS, also when the handshake follows the command "
        "at once.",
    ),
    Clause(
        "stream.receive.eof_iff_empty",
        2,
        'receive() returns b"" if, and only if, the peer sent EOF, and then every time after.',
    ),
    Clause(
        "stream.receive.error_after_data",
        2,
        "After the peer's reset, receive() returns the buffered data first, then raises"
        " ConnectionResetError.",
    ),
    Clause(
        "stream.receive_exactly",
        2,
        "receive_exactly(n) returns n bytes across writes; IncompleteReadError if EOF "
        "comes first.",
    ),
    Clause(
        "stream.receive_until",
        2,
        "receive_until(delim) returns up to and including delim; LimitOverrunError past"
        " max_bytes keeps the data.",
    ),
    Clause(
        "stream.busy",
        2,
        "One receiver and one sender at a time: a second concurrent call raises "
        "BusyResourceError.",
    ),
    Clause(
        "stream.send.flow_control",
        2,
        "send() waits while the peer does not read.",
    ),
    Clause(
        "stream.send.after_peer_closed",
        2,
        "send() after the peer closed fails with BrokenPipeError or a ConnectionError.",
    ),
    Clause(
        "stream.send_eof",
        2,
        "After send_eof() the peer reads EOF, and this side can still receive.",
    ),
    Clause(
        "stream.closed",
        2,
        "After aclose() receive/send/send_eof raise ClosedResourceError; aclose() is idempotent.",
    ),
    Clause(
        "stream.aclose.flushes",
        2,
        "aclose() sends what was sent before it and waits for it.",
    ),
    Clause(
        "stream.aclose.cancelled_aborts",
        2,
        "An aclose() cancelled while it waits for the flush aborts the connection.",
    ),
    Clause(
        "stream.abort",
        2,
        "Stream.abort(): the peer reads ConnectionResetError; is_closing() is True at once.",
    ),
    Clause(
        "stream.at_eof",
        2,
        "A stream whose peer closed says so without a read: at_eof() becomes True.",
    ),
    Clause(
        "listener.serve",
        2,
        "serve(handler) runs one task per connection and closes the stream when it "
        "returns; a handler error aborts its stream and is logged; a peer's reset is "
        "not an error.",
    ),
    Clause(
        "listener.close",
        2,
        "Cancelling serve() or Listener.aclose() stops accepting (accept() raises "
        "ClosedResourceError); running handlers are cancelled or left alone as "
        "documented.",
    ),
    Clause(
        "sockets.nodelay",
        2,
        "TCP_NODELAY is on for connected and accepted TCP sockets.",
    ),
    Clause(
        "sockets.options",
        2,
        "polyloop.setsockopt/getsockopt reach the socket of a stream, plain and TLS.",
    ),
    Clause(
        "sockets.getaddrinfo",
        2,
        "polyloop.getaddrinfo resolves a numeric host at once and a name without "
        "blocking the loop.",
    ),
    Clause(
        "task.outcome",
        2,
        "Awaiting a spawned task gives its result or raises its exception (the same "
        "object); many tasks run at once.",
    ),
    Clause(
        "task.cancel",
        2,
        "cancel() raises Cancelled at the task's current await (also before it started,"
        " also in sleep, also on itself); finally blocks run.",
    ),
    Clause(
        "task.cancel_caught",
        2,
        "A task may catch Cancelled and return a value; cancel() of a done task is "
        "False and keeps its result.",
    ),
    Clause(
        "task.cancelling_counts",
        2,
        "cancelling() counts the cancel requests not undone by uncancel().",
    ),
    Clause(
        "task.wait_for",
        2,
        "wait_for gives the result in time, else raises TimeoutError with the inner "
        "awaitable cancelled; it takes any awaitable and delivers a late cancellation.",
    ),
    Clause(
        "task.api",
        2,
        "current_task() is the running task; a task refuses set_result/set_exception; "
        "spawn() takes only coroutines.",
    ),
    Clause(
        "task.unretrieved_error_logged",
        2,
        "A failed task or future whose exception nobody retrieves is logged, once.",
    ),
    Clause(
        "task.awaits_inner_cleanup",
        2,
        "Cancelling a task that awaits another cancels the inner one and waits for its clean-up.",
    ),
    Clause(
        "future.outcome",
        2,
        "set_result/set_exception wake the awaiter with that result or exception; "
        "result()/exception() while pending, or a second set, raise InvalidStateError.",
    ),
    Clause(
        "future.cancel",
        2,
        "cancel() is True on a pending future, False once done; awaiting a cancelled "
        "future raises Cancelled.",
    ),
    Clause(
        "future.done_callbacks",
        2,
        "add_done_callback(fn) calls fn(future) soon after it is done, never inside set_result.",
    ),
    Clause(
        "scope.deadline",
        2,
        "move_on_after stops its block, fail_after raises TimeoutError; one deadline "
        "for every await inside; moving it applies at once.",
    ),
    Clause(
        "scope.nesting",
        2,
        "Nested scopes: each catches its own expiry, the outer one wins when both "
        "expire; exiting out of order raises RuntimeError.",
    ),
    Clause(
        "scope.shield",
        2,
        "A shielded scope holds back an outer cancellation, Task.cancel() too, until it exits.",
    ),
    Clause(
        "scope.cancel",
        2,
        "scope.cancel() stops the scope's own task at its next await, also before the "
        "scope is entered, and leaves no stray Cancelled.",
    ),
    Clause(
        "taskgroup.waits",
        2,
        "A task group's block ends only once every child has ended.",
    ),
    Clause(
        "taskgroup.errors",
        2,
        "An error in a child or in the block cancels the rest, and every error comes "
        "out in one ExceptionGroup.",
    ),
    Clause(
        "taskgroup.cancel",
        2,
        "Cancelling the group, or the task that runs it, cancels every child and waits for them.",
    ),
    Clause(
        "taskgroup.misuse",
        2,
        "spawn() on a group that has ended raises RuntimeError.",
    ),
    Clause(
        "taskgroup.start",
        2,
        "tg.start(fn) returns the value fn passes to task_status.started(); an error"
        " before started() is raised to the caller; cancelling the caller cancels fn.",
    ),
    Clause(
        "sync.event",
        2,
        "Event.set() wakes every waiter; a cancelled wait leaves the waiters.",
    ),
    Clause(
        "sync.lock",
        2,
        "Lock: one holder at a time, waiters served in arrival order; misuse raises.",
    ),
    Clause(
        "sync.semaphore",
        2,
        "Semaphore and CapacityLimiter count permits and serve waiters in order.",
    ),
    Clause(
        "sync.condition",
        2,
        "Condition.wait() releases the lock and takes it back; notify(n) wakes n waiters.",
    ),
    Clause(
        "sync.one_thread",
        2,
        "A primitive or memory object stream used from a thread that is not its session's"
        " loop thread raises RuntimeError naming polyloop.from_thread, and changes nothing.",
    ),
    Clause(
        "sync.handoff_not_lost",
        2,
        "A waiter cancelled after a lock, permit, notification or item was handed to it"
        " passes it on: nothing is lost.",
    ),
    Clause(
        "channel.order",
        2,
        "A memory object stream delivers every item once, in order; send waits while "
        "the buffer is full.",
    ),
    Clause(
        "channel.close",
        2,
        "Closing every send end ends the receivers after the buffer; closing every "
        "receive end breaks the senders.",
    ),
    Clause(
        "channel.cancelled_send",
        2,
        "A send cancelled while it waits sends nothing.",
    ),
    Clause(
        "mixed.bridges",
        2,
        "An awaitable of any framework, awaited from any session of the mixed thread, "
        "gives its result, its error, and cancellation either side.",
    ),
    Clause(
        "mixed.wakeups",
        2,
        "In the mixed thread, every framework's wake-up issued from every framework runs at once.",
    ),
    # --- tier 2: child processes, pipes and signals (issue 22) ---
    Clause(
        "process.returncode",
        2,
        "get_returncode() is the child's exit status once it is reaped, the same from"
        " subprocess_exec and subprocess_shell.",
    ),
    Clause(
        "process.killed_by_signal",
        2,
        "A child killed by signal N reports returncode -N.",
    ),
    Clause(
        "process.callback_order",
        2,
        "connection_made comes before subprocess_exec returns; pipe_connection_lost once per"
        " pipe; process_exited once; connection_lost(None) last, after both.",
    ),
    Clause(
        "process.stdin_eof",
        2,
        "write_eof() on the child's stdin is EOF for the child.",
    ),
    Clause(
        "process.flow_control",
        2,
        "The child's stdin pauses the protocol past its high-water mark, and every byte"
        " through the child comes back, in order.",
    ),
    Clause(
        "process.cancel_kills",
        2,
        "A cancelled Process.wait() or run_process kills the child and reaps it before"
        " Cancelled goes on.",
    ),
    Clause(
        "process.missing_program",
        2,
        "A program that does not exist raises FileNotFoundError from subprocess_exec,"
        " open_process and run_process, leaving no fd behind.",
    ),
    Clause(
        "process.env_cwd",
        2,
        "env replaces the child's environment and cwd sets its working directory.",
    ),
    Clause(
        "process.no_leak",
        2,
        "Every child is reaped: no zombie, and no fd left open after it.",
    ),
    Clause(
        "pipe.transport",
        2,
        "A pipe transport keeps the Transport rules: flow control, write_eof as EOF for the"
        " reader (eof_received, then connection_lost(None)), RuntimeError for a write after"
        " it, connection_lost when the reader goes, the fd closed after connection_lost.",
    ),
    Clause(
        "signal.receiver",
        2,
        "open_signal_receiver delivers each signal once, on the loop's thread, and puts the"
        " previous handler back at the end of its block; off the main thread it raises"
        " RuntimeError.",
    ),
]

#: Every clause, by id, in the order of the contract (tier 1 first).
CLAUSES: dict[str, Clause] = {c.id: c for c in _ALL}
if len(CLAUSES) != len(_ALL):  # pragma: no cover - a typo caught at import
    raise ValueError("a clause id is used twice")

#: A clause tag in a docstring: ``[transport.close.flushes]``.
TAG = re.compile(r"\[([a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+)\]")


def clause(clause_id: str) -> Clause:
    """The clause ``clause_id``; ``LookupError`` naming the id if there is none."""
    try:
        return CLAUSES[clause_id]
    except KeyError:
        raise LookupError(
            f"no contract clause {clause_id!r} (see polyloop_conformance.rules)"
        ) from None


def clauses_of_tier(tier: int) -> list[Clause]:
    """The clauses of ``tier`` (1 or 2)."""
    if tier not in (1, 2):
        raise ValueError(f"tier is 1 or 2, not {tier!r}")
    return [c for c in CLAUSES.values() if c.tier == tier]


def tags_in(text: str) -> list[str]:
    """The clause ids tagged in ``text`` (a docstring), in order."""
    return TAG.findall(text)


def check_ids(ids: Iterable[str]) -> tuple[str, ...]:
    """``ids`` as a tuple, each one a known clause (``LookupError`` otherwise)."""
    if isinstance(ids, str):
        raise TypeError(f"clauses= takes a list of ids, not the string {ids!r}")
    found = tuple(ids)
    for clause_id in found:
        clause(clause_id)
    return found


# --- the catalogue, as the docs and the command line show it ---

#: The page the rule table is generated into (relative to the repository).
DOCS_PAGE = "docs/rules.md"
_GENERATED = (
    "<!-- Generated by `python -m polyloop_conformance.rules --write-docs` from"
    " polyloop_conformance/rules.py, the checks and the mutants: do not edit by hand."
    " tests/test_rules.py fails when it is out of date. -->"
)


def _catalogue() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """clause id -> the checks that enforce it, and -> the mutants that break it."""
    from .. import checks as _checks  # noqa: F401  (registers every check)
    from .. import mutants
    from .._registry import CHECKS

    mutants._load()
    by_check: dict[str, list[str]] = {c: [] for c in CLAUSES}
    by_mutant: dict[str, list[str]] = {c: [] for c in CLAUSES}
    for chk in CHECKS.values():
        for c in chk.clauses:
            by_check[c].append(chk.name)
    for m in mutants.MUTANTS.values():
        for c in m.clauses:
            by_mutant[c].append(m.name)
    return by_check, by_mutant


def _cell(names: list[str], limit: int = 0) -> str:
    if not names:
        return "--"
    shown = names if not limit or len(names) <= limit else names[:limit]
    more = f" and {len(names) - len(shown)} more" if len(shown) < len(names) else ""
    return ", ".join(f"`{n}`" for n in shown) + more


def rules_markdown() -> str:
    """The page ``docs/rules.md``: every clause, by tier and layer, with its checks and
    the mutants that break it."""
    by_check, by_mutant = _catalogue()
    out = [
        "# The contract, clause by clause",
        "",
        _GENERATED,
        "",
        "Every promise of the backend contract and of the core's API has a stable id, one",
        "sentence and a tier. The conformance checks name the clauses they enforce, every",
        "failure prints the id and the sentence of the clause broken, and each deliberately",
        "broken backend of `polyloop_conformance.mutants` names the clause it breaks. This",
        "page is generated from those declarations (`polyloop_conformance/rules.py`).",
        "",
        "**Tier 1** is what a new backend must pass first: the loop, readiness, timer,",
        "thread and run contract that the core builds everything else on",
        "(`polyloop conformance --tier 1`). **Tier 2** is the rest: protocols, transports,",
        "streams, TLS, tasks and the toolkit, most of it the core's own code running on",
        "tier 1, and a backend's own transports where it brings them.",
        "`polyloop conformance --list` prints the same catalogue in a terminal.",
        "",
    ]
    for tier in (1, 2):
        clauses = clauses_of_tier(tier)
        n_checks = len({n for c in clauses for n in by_check[c.id]})
        out += [
            f"## Tier {tier}: {'the loop a backend provides' if tier == 1 else 'the rest'}",
            "",
            f"{len(clauses)} clauses, enforced by {n_checks} checks.",
            "",
        ]
        layers = list(dict.fromkeys(c.layer for c in clauses))
        for layer in layers:
            out += [
                f"### {layer}",
                "",
                "| clause | promise | checks | mutants |",
                "| --- | --- | --- | --- |",
            ]
            for c in clauses:
                if c.layer != layer:
                    continue
                sentence = c.sentence.replace("|", "\\|")
                checks = _cell(by_check[c.id], limit=6)
                out.append(f"| `{c.id}` | {sentence} | {checks} | {_cell(by_mutant[c.id])} |")
            out.append("")
    return "\n".join(out)


def list_catalogue(tier: int | None = None, file: Any = None) -> None:
    """Print every check (or those of ``tier``) with the clauses it enforces, then every
    clause with its checks: what ``polyloop conformance --list`` shows."""
    from .._registry import CHECKS

    out = file if file is not None else sys.stdout
    if tier is not None:
        clauses_of_tier(tier)  # ValueError for a bad tier
    by_check, _ = _catalogue()
    shown = [c for c in CHECKS.values() if tier is None or c.tier == tier]
    print(f"checks ({len(shown)}):", file=out)
    for chk in shown:
        mixed = " (--mixed only)" if chk.mixed_only else ""
        print(f"  {chk.name}  tier {chk.tier}{mixed}: {chk.doc}", file=out)
        for c in chk.clauses:
            print(f"      [{c}]", file=out)
    listed = [c for c in CLAUSES.values() if tier is None or c.tier == tier]
    print(f"clauses ({len(listed)}):", file=out)
    for c in listed:
        print(f"  [{c.id}] tier {c.tier}: {c.sentence}", file=out)
        print(f"      checks: {', '.join(by_check[c.id]) or '--'}", file=out)


def main(argv: list[str] | None = None) -> int:
    """``python -m polyloop_conformance.rules [--write-docs [PATH] | --diff] [--list]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m polyloop_conformance.rules")
    parser.add_argument(
        "--write-docs", nargs="?", const=DOCS_PAGE, metavar="PATH",
        help=f"write the generated rule table (default {DOCS_PAGE})",
    )  # fmt: skip
    parser.add_argument("--list", action="store_true", help="print the checks and clauses")
    parser.add_argument("--tier", type=int, choices=(1, 2), help="only this tier (--list)")
    args = parser.parse_args(argv)
    if args.write_docs:
        Path(args.write_docs).write_text(rules_markdown() + "\n", encoding="utf-8")
        print(f"wrote {args.write_docs}")
    if args.list or not args.write_docs:
        list_catalogue(args.tier)
    return 0
