"""``python -m onward``: the ``onward`` command line."""

from onward.cli.main import main

raise SystemExit(main())
