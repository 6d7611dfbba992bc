"""``python -m onward.demo``: the demo's worker process."""

from onward.demo.worker import worker_main

raise SystemExit(worker_main())
