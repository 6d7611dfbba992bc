"""Testing helpers for code that runs on onward.

- :class:`FakeClock`: time that moves only when a test, a timer or a back-off moves it;
- :func:`open_engine`: an engine on ``memory://`` or a SQLite file, on a fake clock, with
  :data:`NO_BACKOFF` retries when asked;
- :func:`replay_check`: replays a log's tasks against the registered code and reports where
  they part (non-determinism); :func:`replay_recorded`: the same for a history embedded in a
  test, as ``onward to-test --db URL TASK --engine MODULE:ENGINE`` writes them;
- a pytest plugin (:mod:`onward.testing.plugin`, loaded by pytest through its ``pytest11``
  entry point) with the fixtures ``onward_clock``, ``onward_engine`` and
  ``onward_sqlite_engine``, and the marker ``@pytest.mark.onward(backoff=False, ...)``.
"""

from onward.testing.clock import FakeClock
from onward.testing.engines import NO_BACKOFF, open_engine
from onward.testing.regression import regression_test
from onward.testing.replay import (
    Divergence,
    ReplayCheck,
    decode_history,
    encode_history,
    load_engine,
    replay_check,
    replay_recorded,
    replay_task,
)

__all__ = [
    "NO_BACKOFF",
    "Divergence",
    "FakeClock",
    "ReplayCheck",
    "decode_history",
    "encode_history",
    "load_engine",
    "open_engine",
    "regression_test",
    "replay_check",
    "replay_recorded",
    "replay_task",
]
