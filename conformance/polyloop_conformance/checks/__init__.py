"""The behaviour checks, by category: each category is named for the contract layer it
judges, and each check names the clauses it enforces (``polyloop_conformance.rules``).

Importing this package registers every check in ``polyloop_conformance.CHECKS``.
"""

from . import abort as abort
from . import adoption as adoption
from . import bridges as bridges
from . import cleanliness as cleanliness
from . import close as close
from . import errors as errors
from . import faults as faults
from . import flow as flow
from . import futures as futures
from . import halfclose as halfclose
from . import lifecycle as lifecycle
from . import pools as pools
from . import processes as processes
from . import scopes as scopes
from . import starttls as starttls
from . import streams as streams
from . import sync as sync
from . import taskapi as taskapi
from . import taskgroups as taskgroups
from . import tasks as tasks
from . import threads as threads
from . import timers as timers
from . import tls as tls
from . import udp as udp
from . import unix as unix
from . import wakeups as wakeups
from . import writes as writes

__all__ = [
    "abort",
    "bridges",
    "cleanliness",
    "close",
    "errors",
    "faults",
    "flow",
    "futures",
    "halfclose",
    "lifecycle",
    "pools",
    "processes",
    "scopes",
    "starttls",
    "streams",
    "sync",
    "taskapi",
    "taskgroups",
    "tasks",
    "threads",
    "timers",
    "tls",
    "udp",
    "unix",
    "wakeups",
    "writes",
]
