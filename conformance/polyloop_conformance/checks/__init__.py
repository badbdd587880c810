"""The behaviour checks, by category (Twisted's ReactorBuilder categories).

Importing this package registers every check in ``polyloop_conformance.CHECKS``.
"""

from . import abort as abort
from . import cleanliness as cleanliness
from . import close as close
from . import errors as errors
from . import flow as flow
from . import futures as futures
from . import halfclose as halfclose
from . import lifecycle as lifecycle
from . import streams as streams
from . import tasks as tasks
from . import threads as threads
from . import timers as timers
from . import tls as tls
from . import udp as udp
from . import unix as unix
from . import writes as writes

__all__ = [
    "abort",
    "cleanliness",
    "close",
    "errors",
    "flow",
    "futures",
    "halfclose",
    "lifecycle",
    "streams",
    "tasks",
    "threads",
    "timers",
    "tls",
    "udp",
    "unix",
    "writes",
]
