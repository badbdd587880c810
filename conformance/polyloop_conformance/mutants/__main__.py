"""``python -m polyloop_conformance.mutants``: run the mutants and say what killed each."""

from . import main

raise SystemExit(main())
