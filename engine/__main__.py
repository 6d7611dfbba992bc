"""``python -m engine``: the ``onward`` command line."""

from engine.cli import main

raise SystemExit(main())
