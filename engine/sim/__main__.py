"""``python -m onward.sim``: the simulated session's worker process."""

import sys

from onward.sim.worker import worker_main

sys.exit(worker_main())
