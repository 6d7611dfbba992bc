"""``onward demo``: an application of the library, a survey of real files with a real crash.

Nothing in the library imports this package; the command line finds it through the
``onward.commands`` entry point.
"""
