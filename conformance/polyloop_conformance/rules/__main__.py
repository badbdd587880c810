"""``python -m polyloop_conformance.rules``: write the rule table, list the catalogue."""

from . import main

raise SystemExit(main())
