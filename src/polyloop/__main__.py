"""``python -m polyloop``: the same as the ``polyloop`` command."""

from ._cli import main

raise SystemExit(main())
