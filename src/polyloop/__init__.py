"""polyloop: networked code written once, run on asyncio, Twisted, gevent and Tornado.

This module only re-exports; the implementation lives in the ``_``-prefixed modules.
Importing it imports no framework.
"""

from . import bridge as bridge
from . import from_thread as from_thread
from . import lowlevel as lowlevel
from ._backend import Backend as Backend
from ._cancel import CancelScope as CancelScope
from ._cancel import current_effective_deadline as current_effective_deadline
from ._cancel import fail_after as fail_after
from ._cancel import fail_at as fail_at
from ._cancel import move_on_after as move_on_after
from ._cancel import move_on_at as move_on_at
from ._channels import MemoryObjectReceiveStream as MemoryObjectReceiveStream
from ._channels import MemoryObjectSendStream as MemoryObjectSendStream
from ._channels import MemoryObjectStreamStatistics as MemoryObjectStreamStatistics
from ._channels import create_memory_object_stream as create_memory_object_stream
from ._context import current_backend as current_backend
from ._contract import Handle as Handle
from ._errors import BrokenResourceError as BrokenResourceError
from ._errors import BusyResourceError as BusyResourceError
from ._errors import Cancelled as Cancelled
from ._errors import ClosedResourceError as ClosedResourceError
from ._errors import EndOfStream as EndOfStream
from ._errors import IncompleteReadError as IncompleteReadError
from ._errors import LimitOverrunError as LimitOverrunError
from ._errors import WouldBlock as WouldBlock
from ._frontend import adopt_connection as adopt_connection
from ._frontend import adopt_udp as adopt_udp
from ._frontend import call_later as call_later
from ._frontend import call_soon as call_soon
from ._frontend import call_soon_threadsafe as call_soon_threadsafe
from ._frontend import connect_read_pipe as connect_read_pipe
from ._frontend import connect_tcp as connect_tcp
from ._frontend import connect_unix as connect_unix
from ._frontend import connect_write_pipe as connect_write_pipe
from ._frontend import create_future as create_future
from ._frontend import getaddrinfo as getaddrinfo
from ._frontend import getsockopt as getsockopt
from ._frontend import listen_sockets as listen_sockets
from ._frontend import listen_tcp as listen_tcp
from ._frontend import listen_unix as listen_unix
from ._frontend import open_udp as open_udp
from ._frontend import run as run
from ._frontend import run_in_thread as run_in_thread
from ._frontend import setsockopt as setsockopt
from ._frontend import sleep as sleep
from ._frontend import spawn as spawn
from ._frontend import start_tls as start_tls
from ._frontend import subprocess_exec as subprocess_exec
from ._frontend import subprocess_shell as subprocess_shell
from ._frontend import time as time
from ._frontend import wait_for as wait_for
from ._futures import Future as Future
from ._futures import Task as Task
from ._futures import current_task as current_task
from ._limiter import CapacityLimiter as CapacityLimiter
from ._limiter import CapacityLimiterStatistics as CapacityLimiterStatistics
from ._listener import Listener as Listener
from ._listener import open_tcp_listener as open_tcp_listener
from ._listener import open_tcp_stream as open_tcp_stream
from ._listener import open_unix_listener as open_unix_listener
from ._listener import open_unix_stream as open_unix_stream
from ._pipes import ReadTransport as ReadTransport
from ._pipes import WriteTransport as WriteTransport
from ._process import Process as Process
from ._process import open_process as open_process
from ._process import run_process as run_process
from ._protocols import BaseProtocol as BaseProtocol
from ._protocols import DatagramProtocol as DatagramProtocol
from ._protocols import Protocol as Protocol
from ._registry import BackendInfo as BackendInfo
from ._registry import BackendSpec as BackendSpec
from ._registry import BackendUnavailable as BackendUnavailable
from ._registry import available_backends as available_backends
from ._registry import load_backend as load_backend
from ._server import Server as Server
from ._session import Session as Session
from ._signals import open_signal_receiver as open_signal_receiver
from ._streams import Stream as Stream
from ._subprocess import SubprocessProtocol as SubprocessProtocol
from ._subprocess import SubprocessTransport as SubprocessTransport
from ._sync import Condition as Condition
from ._sync import ConditionStatistics as ConditionStatistics
from ._sync import Event as Event
from ._sync import EventStatistics as EventStatistics
from ._sync import Lock as Lock
from ._sync import LockStatistics as LockStatistics
from ._sync import Semaphore as Semaphore
from ._sync import SemaphoreStatistics as SemaphoreStatistics
from ._taskgroup import TASK_STATUS_IGNORED as TASK_STATUS_IGNORED
from ._taskgroup import TaskGroup as TaskGroup
from ._taskgroup import TaskStatus as TaskStatus
from ._transports import BaseTransport as BaseTransport
from ._transports import DatagramTransport as DatagramTransport
from ._transports import Transport as Transport

__version__ = "0.1.0"

__all__ = [
    "TASK_STATUS_IGNORED",
    "Backend",
    "BackendInfo",
    "BackendSpec",
    "BackendUnavailable",
    "BaseProtocol",
    "BaseTransport",
    "BrokenResourceError",
    "BusyResourceError",
    "CancelScope",
    "Cancelled",
    "CapacityLimiter",
    "CapacityLimiterStatistics",
    "ClosedResourceError",
    "Condition",
    "ConditionStatistics",
    "DatagramProtocol",
    "DatagramTransport",
    "EndOfStream",
    "Event",
    "EventStatistics",
    "Future",
    "Handle",
    "IncompleteReadError",
    "LimitOverrunError",
    "Listener",
    "Lock",
    "LockStatistics",
    "MemoryObjectReceiveStream",
    "MemoryObjectSendStream",
    "MemoryObjectStreamStatistics",
    "Process",
    "Protocol",
    "ReadTransport",
    "Semaphore",
    "SemaphoreStatistics",
    "Server",
    "Session",
    "Stream",
    "SubprocessProtocol",
    "SubprocessTransport",
    "Task",
    "TaskGroup",
    "TaskStatus",
    "Transport",
    "WouldBlock",
    "WriteTransport",
    "adopt_connection",
    "adopt_udp",
    "available_backends",
    "bridge",
    "call_later",
    "call_soon",
    "call_soon_threadsafe",
    "connect_read_pipe",
    "connect_tcp",
    "connect_unix",
    "connect_write_pipe",
    "create_future",
    "create_memory_object_stream",
    "current_backend",
    "current_effective_deadline",
    "current_task",
    "fail_after",
    "fail_at",
    "from_thread",
    "getaddrinfo",
    "getsockopt",
    "listen_sockets",
    "listen_tcp",
    "listen_unix",
    "load_backend",
    "lowlevel",
    "move_on_after",
    "move_on_at",
    "open_process",
    "open_signal_receiver",
    "open_tcp_listener",
    "open_tcp_stream",
    "open_udp",
    "open_unix_listener",
    "open_unix_stream",
    "run",
    "run_in_thread",
    "run_process",
    "setsockopt",
    "sleep",
    "spawn",
    "start_tls",
    "subprocess_exec",
    "subprocess_shell",
    "time",
    "wait_for",
]

# Users see polyloop.Transport, not polyloop._transports.Transport.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("polyloop._"):
        try:
            _obj.__module__ = "polyloop"
        except (AttributeError, TypeError):
            pass
del _name, _obj
