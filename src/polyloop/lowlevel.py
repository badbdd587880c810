"""The backend author's kit: everything a backend adapter imports from the core.

Rule: this module only re-exports. A third-party backend needs nothing else from polyloop
(never a ``polyloop._`` module), and the four first-party adapters import exactly this.
See ``docs/writing-a-backend.md``.
"""

from ._acceptor import ACCEPT_RESOURCE_ERRORS as ACCEPT_RESOURCE_ERRORS
from ._acceptor import ACCEPT_RETRY_DELAY as ACCEPT_RETRY_DELAY
from ._acceptor import ACCEPTS_PER_EVENT as ACCEPTS_PER_EVENT
from ._acceptor import SocketAcceptor as SocketAcceptor
from ._acceptor import accept_connections as accept_connections
from ._acceptor import pause_accepting as pause_accepting
from ._context import context_for as context_for
from ._context import current_or_none as current_or_none
from ._context import hosts as hosts
from ._context import set_current as set_current
from ._contract import Acceptor as Acceptor
from ._contract import Callback as Callback
from ._contract import SessionContract as SessionContract
from ._errors import aborted as aborted
from ._errors import call_logged as call_logged
from ._errors import check_bytes as check_bytes
from ._errors import map_exceptions as map_exceptions
from ._errors import translate as translate
from ._errors import write_after_eof as write_after_eof
from ._futures import known_runner as known_runner
from ._lifecycle import Resources as Resources
from ._lifecycle import end_with_asyncio_loop as end_with_asyncio_loop
from ._pipes import PipeReadTransport as PipeReadTransport
from ._pipes import PipeWriteTransport as PipeWriteTransport
from ._plugins import lazy_attributes as lazy_attributes
from ._reaper import watch_child as watch_child
from ._session import Session as Session
from ._signals import signal_cancelled as signal_cancelled
from ._sockets import LINGER_RST as LINGER_RST
from ._sockets import MAX_DATAGRAM as MAX_DATAGRAM
from ._sockets import READ_SIZE as READ_SIZE
from ._sockets import fd_of as fd_of
from ._sockets import oserror as oserror
from ._sockets import set_nodelay as set_nodelay
from ._sockets import set_reset_on_close as set_reset_on_close
from ._sockettransport import SocketDatagramTransport as SocketDatagramTransport
from ._sockettransport import SocketTransport as SocketTransport
from ._sockettransport import socket_extra as socket_extra
from ._subprocess import CoreSubprocessTransport as CoreSubprocessTransport
from ._tasks import AsyncioTask as AsyncioTask
from ._tasks import CoroutineTask as CoroutineTask
from ._tasks import TaskDriver as TaskDriver
from ._tasks import from_asyncio_future as from_asyncio_future
from ._tasks import in_asyncio_executor as in_asyncio_executor
from ._tls import HANDSHAKE_TIMEOUT as HANDSHAKE_TIMEOUT
from ._tls import RecordCounter as RecordCounter
from ._tls import TLSProtocol as TLSProtocol
from ._tls import TLSTransport as TLSTransport
from ._transports import DEFAULT_HIGH_WATER as DEFAULT_HIGH_WATER
from ._transports import check_buffer_limits as check_buffer_limits
from ._transports import datagram_address as datagram_address
from ._transports import drain_datagrams as drain_datagrams

__all__ = [
    "ACCEPTS_PER_EVENT",
    "ACCEPT_RESOURCE_ERRORS",
    "ACCEPT_RETRY_DELAY",
    "DEFAULT_HIGH_WATER",
    "HANDSHAKE_TIMEOUT",
    "LINGER_RST",
    "MAX_DATAGRAM",
    "READ_SIZE",
    "Acceptor",
    "AsyncioTask",
    "Callback",
    "CoreSubprocessTransport",
    "CoroutineTask",
    "PipeReadTransport",
    "PipeWriteTransport",
    "RecordCounter",
    "Resources",
    "Session",
    "SessionContract",
    "SocketAcceptor",
    "SocketDatagramTransport",
    "SocketTransport",
    "TLSProtocol",
    "TLSTransport",
    "TaskDriver",
    "aborted",
    "accept_connections",
    "call_logged",
    "check_buffer_limits",
    "check_bytes",
    "context_for",
    "current_or_none",
    "datagram_address",
    "drain_datagrams",
    "end_with_asyncio_loop",
    "fd_of",
    "from_asyncio_future",
    "hosts",
    "in_asyncio_executor",
    "known_runner",
    "lazy_attributes",
    "map_exceptions",
    "oserror",
    "pause_accepting",
    "set_current",
    "set_nodelay",
    "set_reset_on_close",
    "signal_cancelled",
    "socket_extra",
    "translate",
    "watch_child",
    "write_after_eof",
]
