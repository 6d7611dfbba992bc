"""The runner: the :class:`~onward.Engine` facade, a task's run and its step protocol, the
scheduler, workers and task boundaries."""
