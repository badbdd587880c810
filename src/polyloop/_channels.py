"""Memory object streams: a bounded, closable queue between tasks (anyio's shape).

Rule: ``create_memory_object_stream(max_buffer_size)`` gives a send end and a receive
end that share one state. Items arrive in the order they were sent, each exactly once.
Waiters are served first come first served, and what is handed over is never lost: an
item handed to a receiver that is cancelled before it resumes goes back to the front of
the queue (or to the next receiver). A sender cancelled while waiting has sent nothing,
unless a receiver had taken its item already (the item then arrives; the sender still
sees ``Cancelled``, as anyio's does).

Closing: when every send end is closed, receivers drain the buffer and then get
``EndOfStream`` (async iteration just ends); when every receive end is closed, senders get
``BrokenResourceError`` and the buffer is dropped. Using an end that was closed raises
``ClosedResourceError``. ``clone()`` makes another end of the same side.

One thread: both ends belong to the session current when the stream was first used,
and refuse every operation from another OS thread with ``RuntimeError`` (Rule 3 of
``_sync.py``); another thread goes through ``polyloop.from_thread``.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ._context import current_backend
from ._errors import BrokenResourceError, Cancelled, ClosedResourceError, EndOfStream, WouldBlock
from ._futures import Future
from ._primitives import OneThread, thread_ident

__all__ = [
    "MemoryObjectReceiveStream",
    "MemoryObjectSendStream",
    "MemoryObjectStreamStatistics",
    "create_memory_object_stream",
]

T = TypeVar("T")


@dataclass(frozen=True)
class MemoryObjectStreamStatistics:
    """What a memory object stream holds and who waits on it."""

    current_buffer_used: int
    max_buffer_size: float
    open_send_streams: int
    open_receive_streams: int
    tasks_waiting_send: int
    tasks_waiting_receive: int


@dataclass(eq=False)
class _State(OneThread, Generic[T]):
    _kind = "memory object stream"

    max_buffer_size: float
    buffer: deque[T] = field(default_factory=deque)
    open_send: int = 0
    open_receive: int = 0
    waiting_receivers: OrderedDict[Future[T], None] = field(default_factory=OrderedDict)
    waiting_senders: OrderedDict[Future[None], T] = field(default_factory=OrderedDict)

    def statistics(self) -> MemoryObjectStreamStatistics:
        return MemoryObjectStreamStatistics(
            len(self.buffer), self.max_buffer_size, self.open_send, self.open_receive,
            len(self.waiting_senders), len(self.waiting_receivers),
        )  # fmt: skip

    def give(self, item: T) -> bool:
        """Hand ``item`` to the first waiting receiver; False if none waits."""
        while self.waiting_receivers:
            receiver, _ = self.waiting_receivers.popitem(last=False)
            if not receiver.done():
                receiver.set_result(item)
                return True
        return False

    def take_from_sender(self) -> tuple[T] | tuple[()]:
        """The first waiting sender's item (the sender is woken), or ``()``."""
        while self.waiting_senders:
            sender, item = self.waiting_senders.popitem(last=False)
            if not sender.done():
                sender.set_result(None)
                return (item,)
        return ()

    def refill(self) -> None:
        """Room was made in the buffer: move waiting senders' items into it."""
        while self.waiting_senders and len(self.buffer) < self.max_buffer_size:
            taken = self.take_from_sender()
            if taken:
                self.buffer.append(taken[0])

    def put_back(self, item: T) -> None:
        """An item a cancelled receiver had been handed: first in line again."""
        if not self.give(item):
            self.buffer.appendleft(item)


class _Closable:
    """``with``/``async with`` and ``aclose()`` for an end that has ``close()``."""

    def close(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        """``close()``."""
        self.close()

    def __enter__(self: E) -> E:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self: E) -> E:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


E = TypeVar("E", bound=_Closable)


class MemoryObjectSendStream(_Closable, Generic[T]):
    """The send end: ``await send(item)`` (waits while the buffer is full)."""

    def __init__(self, state: _State[T]) -> None:
        self._state = state
        self._closed = False
        state.open_send += 1

    def send_nowait(self, item: T) -> None:
        """Send now: to a waiting receiver, or into the buffer; else ``WouldBlock``."""
        if self._state._thread_id != thread_ident():
            self._state._check_thread("send_nowait()")
        if self._closed:
            raise ClosedResourceError("this send stream was closed")
        state = self._state
        if not state.open_receive:
            raise BrokenResourceError("every receive stream is closed")
        if state.give(item):
            return
        if len(state.buffer) < state.max_buffer_size:
            state.buffer.append(item)
            return
        raise WouldBlock("the buffer is full")

    async def send(self, item: T) -> None:
        """Send ``item``, waiting for room (or a receiver, with no buffer)."""
        try:
            self.send_nowait(item)
            return
        except WouldBlock:
            pass
        state = self._state
        waiter: Future[None] = current_backend().create_future()
        state.waiting_senders[waiter] = item
        try:
            await waiter
        except Cancelled:
            state.waiting_senders.pop(waiter, None)  # not taken: nothing was sent
            raise
        # Woken with an exception set if the receivers went away meanwhile.

    def clone(self) -> MemoryObjectSendStream[T]:
        """Another send end of the same stream (it must be closed too)."""
        if self._closed:
            raise ClosedResourceError("this send stream was closed")
        return MemoryObjectSendStream(self._state)

    def close(self) -> None:
        """Close this end; the last send end closed ends the stream for receivers."""
        if self._closed:
            return
        if self._state._thread_id != thread_ident():
            self._state._check_thread("close()")
        self._closed = True
        state = self._state
        state.open_send -= 1
        if state.open_send == 0:
            receivers, state.waiting_receivers = state.waiting_receivers, OrderedDict()
            for receiver in receivers:
                if not receiver.done():
                    receiver.set_exception(EndOfStream())

    def statistics(self) -> MemoryObjectStreamStatistics:
        """The stream's buffer and waiters."""
        return self._state.statistics()


class MemoryObjectReceiveStream(_Closable, Generic[T]):
    """The receive end: ``await receive()``, or ``async for item in stream``."""

    def __init__(self, state: _State[T]) -> None:
        self._state = state
        self._closed = False
        state.open_receive += 1

    def receive_nowait(self) -> T:
        """An item now; ``WouldBlock`` if there is none, ``EndOfStream`` after the end."""
        if self._state._thread_id != thread_ident():
            self._state._check_thread("receive_nowait()")
        if self._closed:
            raise ClosedResourceError("this receive stream was closed")
        state = self._state
        if state.buffer:
            item = state.buffer.popleft()
            state.refill()
            return item
        taken = state.take_from_sender()  # no buffer: straight from a waiting sender
        if taken:
            return taken[0]
        if not state.open_send:
            raise EndOfStream()
        raise WouldBlock("no item is ready")

    async def receive(self) -> T:
        """The next item, waiting for one; ``EndOfStream`` once every sender closed and
        the buffer is empty."""
        try:
            return self.receive_nowait()
        except WouldBlock:
            pass
        state = self._state
        waiter: Future[T] = current_backend().create_future()
        state.waiting_receivers[waiter] = None
        try:
            return await waiter
        except Cancelled:
            state.waiting_receivers.pop(waiter, None)
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                state.put_back(waiter.result())  # handed to us as we were cancelled
            raise

    def clone(self) -> MemoryObjectReceiveStream[T]:
        """Another receive end of the same stream (it must be closed too)."""
        if self._closed:
            raise ClosedResourceError("this receive stream was closed")
        return MemoryObjectReceiveStream(self._state)

    def close(self) -> None:
        """Close this end; the last receive end closed breaks the stream for senders."""
        if self._closed:
            return
        if self._state._thread_id != thread_ident():
            self._state._check_thread("close()")
        self._closed = True
        state = self._state
        state.open_receive -= 1
        if state.open_receive == 0:
            state.buffer.clear()
            senders, state.waiting_senders = state.waiting_senders, OrderedDict()
            for sender in senders:
                if not sender.done():
                    sender.set_exception(BrokenResourceError("every receive stream is closed"))

    def statistics(self) -> MemoryObjectStreamStatistics:
        """The stream's buffer and waiters."""
        return self._state.statistics()

    def __aiter__(self) -> MemoryObjectReceiveStream[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.receive()
        except EndOfStream:
            raise StopAsyncIteration from None


def create_memory_object_stream(
    max_buffer_size: float = 0,
) -> tuple[MemoryObjectSendStream[Any], MemoryObjectReceiveStream[Any]]:
    """A (send end, receive end) pair; the buffer holds ``max_buffer_size`` items
    (0: a send waits for a receiver; ``math.inf``: no limit)."""
    if max_buffer_size != math.inf and not isinstance(max_buffer_size, int):
        raise TypeError("max_buffer_size must be an int or math.inf")
    if max_buffer_size < 0:
        raise ValueError("max_buffer_size must be >= 0")
    state: _State[Any] = _State(max_buffer_size)
    return MemoryObjectSendStream(state), MemoryObjectReceiveStream(state)
