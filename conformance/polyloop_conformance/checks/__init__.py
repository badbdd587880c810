"""The behaviour checks, by category (Twisted's ReactorBuilder categories).

Importing this package registers every check in ``polyloop_conformance.CHECKS``.
"""

from . import errors as errors
from . import lifecycle as lifecycle

__all__ = ["errors", "lifecycle"]
