"""The parts of :class:`onward.Engine`, one module per group of its methods.

The engine is one obvious entry; its methods are grouped here by what they are for, and
:class:`~onward.runtime.engine.Engine` puts the groups together with what every group needs
(the session, the registry, the policies) and the loops that run the tasks.
"""
