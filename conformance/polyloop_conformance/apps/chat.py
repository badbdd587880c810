"""Line chat: many members, each line broadcast to all the others.

What it proves: a server that fans one connection's input out to many others keeps
per-member flow control. When a member stops reading, its transport calls
``pause_writing``; the server then stops writing to it and queues that member's lines
in a backlog of at most ``BACKLOG_LIMIT`` bytes, and disconnects the member (abort)
past that limit. The other members keep receiving every line, in order, and the
server's memory per member stays bounded (the server reports its peak through
``/stats``, so a client in another process can check it; the counters cover the
server's whole life, as it may serve several exercises in a row).

Wire protocol (a line is bytes up to ``\\n``, at most ``MAX_LINE`` bytes):

- to a new member: ``* welcome <id>``; to the others: ``* <id> joined``
- a member's line ``text`` goes to every other member as ``<id>: text``
- a member that leaves: ``* <id> left``; one disconnected for not reading: ``* <id> dropped``
- ``/stats`` answers the sender only: ``* stats peak=<bytes> dropped=<n> members=<n>``
- a line over ``MAX_LINE`` gets ``* error line too long``, then the member is closed.

Limits (the server is one that people run): a line of at most ``MAX_LINE`` (8 KiB), and
at most ``BACKLOG_LIMIT`` (256 KiB) queued for a member that does not read (then it is
dropped); the peak per member is ``PEAK_BOUND``.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import polyloop

from ._base import App, AppConfig, Running, register
from ._util import Signal, aclose_within, shrink_socket_buffers, within

__all__ = ["ChatMember", "ChatRoom", "exercise", "serve"]

#: A member's transport pauses above this many buffered bytes.
HIGH_WATER = 64 * 1024
#: Bytes queued for a paused member before it is disconnected.
BACKLOG_LIMIT = 256 * 1024
#: The longest line a member may send.
MAX_LINE = 8 * 1024
#: Kernel send buffer size of the member sockets (see ``shrink_socket_buffers``).
SOCKET_BUFFER = 64 * 1024
#: What the exercise accepts as the server's peak bytes for one member: the transport
#: buffer (high-water mark plus what one read may bring before ``pause_writing`` is
#: seen), plus the backlog limit, plus one line.
PEAK_BOUND = HIGH_WATER + 256 * 1024 + BACKLOG_LIMIT + MAX_LINE + 64


class ChatRoom:
    """The members of one server and the broadcast between them."""

    def __init__(self) -> None:
        self.members: dict[int, ChatMember] = {}
        self.next_id = 1
        self.peak = 0
        self.dropped = 0

    def join(self, member: ChatMember) -> None:
        """Give ``member`` an id, greet it, and tell the others."""
        member.id = self.next_id
        self.next_id += 1
        self.members[member.id] = member
        member.send(b"* welcome %d\n" % member.id)
        self.broadcast(member, b"* %d joined\n" % member.id)

    def leave(self, member: ChatMember, why: bytes) -> None:
        """Forget ``member`` (once) and tell the others ``* <id> <why>``."""
        if self.members.pop(member.id, None) is not None:
            self.broadcast(member, b"* %d %s\n" % (member.id, why))

    def drop(self, member: ChatMember) -> None:
        """Disconnect a member that does not read."""
        member.gone = True
        self.dropped += 1
        member.transport.abort()
        self.leave(member, b"dropped")

    def line(self, member: ChatMember, text: bytes) -> None:
        """Handle one complete line from ``member``."""
        if text == b"/stats":
            member.send(
                b"* stats peak=%d dropped=%d members=%d\n"
                % (self.peak, self.dropped, len(self.members))
            )
        else:
            self.broadcast(member, b"%d: %s\n" % (member.id, text))

    def broadcast(self, sender: ChatMember, line: bytes) -> None:
        """Send ``line`` to every member but ``sender``."""
        for other in list(self.members.values()):
            if other is not sender:
                other.send(line)


class ChatMember(polyloop.Protocol):
    """One connection of the chat server, with its own flow control and backlog."""

    def __init__(self, room: ChatRoom) -> None:
        self.room = room
        self.id = 0
        self.buffer = bytearray()
        self.backlog: deque[bytes] = deque()
        self.backlog_bytes = 0
        self.paused = False
        self.gone = False

    def connection_made(self, transport: polyloop.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        transport.set_write_buffer_limits(HIGH_WATER)
        shrink_socket_buffers(transport, SOCKET_BUFFER)
        self.room.join(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while not self.gone:
            end = self.buffer.find(b"\n", 0, MAX_LINE + 1)
            if end < 0:
                if len(self.buffer) > MAX_LINE:
                    self.send(b"* error line too long\n")
                    self.gone = True
                    self.transport.close()
                return
            text = bytes(self.buffer[:end]).rstrip(b"\r")
            del self.buffer[: end + 1]
            self.room.line(self, text)

    def send(self, line: bytes) -> None:
        """Write ``line`` now, or queue it while the transport is paused."""
        if self.gone:
            return
        if self.paused:
            self.backlog.append(line)
            self.backlog_bytes += len(line)
        else:
            self.transport.write(line)
        held = self.transport.get_write_buffer_size() + self.backlog_bytes
        self.room.peak = max(self.room.peak, held)
        if self.backlog_bytes > BACKLOG_LIMIT:
            self.room.drop(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        # write() may call pause_writing() again before it returns: stop there.
        while self.backlog and not self.paused and not self.gone:
            line = self.backlog.popleft()
            self.backlog_bytes -= len(line)
            self.transport.write(line)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.gone = True
        self.backlog.clear()
        self.room.leave(self, b"left")


async def serve(config: AppConfig) -> Running:
    """Start a chat server; every connection joins one room."""
    room = ChatRoom()
    server = await polyloop.listen_tcp(lambda: ChatMember(room), config.host, config.port)
    return Running((config.host, server.port), server.aclose)


# --- the client side ---

#: Active members in the exercise (plus one that never reads).
ACTIVE = 4
#: Lines a sender may have in flight (sent but not yet seen by every other member).
WINDOW = 8
#: Payload bytes per line.
LINE_SIZE = 4000
#: Give up (the server buffers without bound) after sending this much in all.
SEND_CAP = 32 * 1024 * 1024


class _Client:
    """One member on the client side: a Stream and what it has seen."""

    def __init__(self, stream: polyloop.Stream, member_id: int) -> None:
        self.stream = stream
        self.id = member_id
        self.last: dict[int, int] = {}  # sender id -> last sequence number seen
        self.notices: list[bytes] = []
        self.stats: bytes | None = None
        self.error: str | None = None

    @classmethod
    async def join(cls, address: tuple[str, int], stuck: bool = False) -> _Client:
        stream = await polyloop.open_tcp_stream(address[0], address[1])
        if stuck:
            shrink_socket_buffers(stream.transport, SOCKET_BUFFER)
        line = await within(5, stream.receive_until(b"\n", MAX_LINE * 2), "chat welcome")
        assert line.startswith(b"* welcome "), f"expected a welcome line, got {line[:80]!r}"
        return cls(stream, int(line.split()[2]))

    def last_stats(self) -> bytes | None:
        """The last ``* stats`` line received, if any."""
        return self.stats

    async def read_lines(self, signal: Signal) -> None:
        """Check each line until EOF; record progress and wake the senders."""
        try:
            while True:
                try:
                    line = await self.stream.receive_until(b"\n", MAX_LINE * 2)
                except polyloop.IncompleteReadError as exc:
                    assert not exc.partial, f"member {self.id}: partial line at EOF"
                    return
                self._check(line.rstrip(b"\n"))
                signal.fire()
        except AssertionError as exc:
            self.error = str(exc)
        except Exception as exc:  # reported through self.error
            self.error = f"member {self.id}: {type(exc).__name__}: {exc}"
        finally:
            signal.fire()

    def _check(self, line: bytes) -> None:
        if line.startswith(b"* stats "):
            self.stats = line
        elif line.startswith(b"* "):
            self.notices.append(line)
        else:
            head, _, rest = line.partition(b": ")
            sender, seq = int(head), int(rest.split(b" ", 1)[0])
            assert sender != self.id, f"member {self.id} got its own line back"
            want = self.last.get(sender, 0) + 1
            assert seq == want, f"member {self.id}: line {seq} from {sender}, expected {want}"
            self.last[sender] = seq


async def exercise(config: AppConfig, address: tuple[str, int]) -> None:
    """Four members talk while a fifth never reads; the fifth must be dropped.

    Each active member sends numbered lines (at most ``WINDOW`` in flight) until every
    active member has seen ``* <stuck> dropped``; then each checks that it got every
    line of every other active member, in order, and ``/stats`` must show a bounded
    per-member peak. A line over ``MAX_LINE`` must get an error and a close.
    """
    stuck = await _Client.join(address, stuck=True)
    members = [await _Client.join(address) for _ in range(ACTIVE)]
    signal = Signal()
    readers = [polyloop.spawn(m.read_lines(signal)) for m in members]
    dropped = b"* %d dropped" % stuck.id
    pad = b"x" * LINE_SIZE
    total = 0
    try:

        def errors() -> None:
            for m in members:
                assert m.error is None, m.error

        def all_saw_drop() -> bool:
            return all(dropped in m.notices for m in members)

        async def talk(me: _Client) -> int:
            nonlocal total
            seq = 0
            others = [m for m in members if m is not me]
            while not all_saw_drop():
                assert total < SEND_CAP, (
                    f"sent {total} bytes and the member that never reads is still"
                    " connected: the server buffers for it without bound"
                )
                while min(m.last.get(me.id, 0) for m in others) < seq - WINDOW:
                    errors()
                    await signal.wait()
                seq += 1
                line = b"%d %s\n" % (seq, pad)
                total += len(line)
                await me.stream.send(line)
            return seq

        async def talk_and_settle(me: _Client) -> None:
            last = await talk(me)
            others = [m for m in members if m is not me]
            while min(m.last.get(me.id, 0) for m in others) < last:
                errors()
                await signal.wait()

        # The server may have served earlier runs (--cross): count drops from here.
        before = await _ask_stats(members[0], signal)
        tasks = [polyloop.spawn(talk_and_settle(m)) for m in members]
        try:
            for task in tasks:
                await within(20, _await(task), "chat broadcast")
        finally:
            for task in tasks:
                task.cancel()
        errors()
        assert stuck.id not in members[0].last, "the stuck member's lines were broadcast"

        after = await _ask_stats(members[0], signal)
        peak, n_dropped = after[b"peak"], after[b"dropped"] - before[b"dropped"]
        assert n_dropped == 1, f"server dropped {n_dropped} members, expected only the stuck one"
        assert peak <= PEAK_BOUND, (
            f"server held {peak} bytes for one member (bound {PEAK_BOUND}):"
            " per-member flow control does not bound memory"
        )

        # The stuck member, reading at last, sees its lines and then the disconnect.
        await within(10, _drain(stuck.stream), "the dropped member's disconnect")
        await _too_long(address)
    finally:
        for m in members:
            if not m.stream.transport.is_closing():
                await m.stream.send_eof()
        for reader in readers:
            try:
                await within(5, _await(reader), "chat member EOF")
            finally:
                reader.cancel()
        for m in [stuck, *members]:
            await aclose_within(m.stream)
    for m in members:
        assert m.error is None, m.error


async def _ask_stats(member: _Client, signal: Signal) -> dict[bytes, int]:
    member.stats = None
    await member.stream.send(b"/stats\n")
    while (line := member.last_stats()) is None:
        assert member.error is None, member.error
        await within(5, signal.wait(), "/stats answer")
    return {k: int(v) for k, v in (f.split(b"=") for f in line.split()[2:])}


async def _await(task: polyloop.Task[Any]) -> Any:
    return await task


async def _drain(stream: polyloop.Stream) -> None:
    try:
        while await stream.receive(1 << 20):
            pass
    except OSError:  # a reset: the server aborted this member, as it should
        pass


async def _too_long(address: tuple[str, int]) -> None:
    client = await _Client.join(address)
    try:
        await client.stream.send(b"y" * (MAX_LINE + 1))
        while True:
            line = await within(5, client.stream.receive_until(b"\n"), "line-too-long error")
            if not line.startswith(b"* ") or line.startswith(b"* error"):
                break  # skip the join/leave notices of the others
        assert line == b"* error line too long\n", f"expected an error line, got {line[:80]!r}"
        rest = await within(5, client.stream.receive(), "close after a too-long line")
        assert rest == b"", f"expected EOF after the error, got {rest[:80]!r}"
    finally:
        await aclose_within(client.stream)


APP = register(
    App(
        "chat",
        "line chat: 4 members broadcast, a 5th never reads and is dropped; bounded memory",
        serve,
        exercise,
    )
)
