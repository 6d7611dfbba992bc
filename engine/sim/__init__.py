"""``onward simulate``: the continuous-operation simulator, an application of the library.

It runs an agent's session for hours of simulated time in minutes: through the real engine, on
a real SQLite log, against a seeded fault model written as data (:mod:`onward.sim.profile`, two
profiles ship), with real exceptions (:mod:`onward.sim.work`), component outages, a simulated
person who answers approvals and teaches fixes (:mod:`onward.sim.worker`), and real ``kill -9``
of the worker process at seeded moments (:mod:`onward.sim.command`). Then it measures what
onward claims (:mod:`onward.sim.measure`). Nothing in the library imports it; the command line
finds it through the ``onward.commands`` entry point.
"""

from onward.sim.command import START, run_simulation
from onward.sim.interrupt import Interrupted
from onward.sim.measure import DESIGN, Kill, SimResult, measure, table
from onward.sim.profile import PROFILES, Profile, load_profile

__all__ = [
    "DESIGN",
    "PROFILES",
    "START",
    "Interrupted",
    "Kill",
    "Profile",
    "SimResult",
    "load_profile",
    "measure",
    "run_simulation",
    "table",
]
