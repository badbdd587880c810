"""The conformance apps, each written once against the polyloop API.

Importing this package registers every app in ``APPS``: ``echo``, ``echo-stream``,
``chat``, ``http``, ``ws``, ``resp``, ``udp``, ``tls``, ``proxy`` and ``filter``
(a child process per connection).
"""

from . import chat as chat
from . import echo as echo
from . import filter as filter
from . import http as http
from . import proxy as proxy
from . import resp as resp
from . import tls_echo as tls_echo
from . import udp as udp
from . import ws as ws
from ._base import APPS as APPS
from ._base import App as App
from ._base import AppConfig as AppConfig
from ._base import Running as Running
from ._base import register as register

__all__ = [
    "APPS",
    "App",
    "AppConfig",
    "Running",
    "chat",
    "echo",
    "filter",
    "http",
    "proxy",
    "register",
    "resp",
    "tls_echo",
    "udp",
    "ws",
]
