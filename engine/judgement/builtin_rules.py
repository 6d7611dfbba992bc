"""The built-in rules of the decision rulebook, as TOML decoded like any user's rules file.

A user's file replaces any of them by using its id (``onward rules`` lists them). The facts
each scenario reads:

``error``
    ``error_type`` (the exception's class name), ``exception_types`` (its class name and every
    base class name, space separated: ``"ModuleNotFoundError ImportError Exception
    BaseException"``), ``message``, ``signature``, ``step``, ``attempt``. Exception names are
    matched in ``exception_types`` between word boundaries, so a subclass matches its bases'
    rules, and ``sqlite3.OperationalError`` matches ``OperationalError``.
``task_completed``
    ``task`` (its id), ``parent`` (the parent task's id, or ""), ``queued`` (how many tasks
    wait in the queue).
``action``
    ``action`` (its name), ``impact`` (``"low"``, ``"medium"`` or ``"high"``).

Every fix named here is registered in :func:`onward.healing.remedies.builtin_fixes`. A rule's
``retry = false`` stops a plain retry of the unchanged call (a fix's own re-run still happens);
the retry policy decides where a rule leaves ``retry`` out.
"""

from __future__ import annotations

from typing import Final

__all__ = ["BUILTIN_RULES"]

BUILTIN_RULES: Final = r"""
# --- scenario "error" ------------------------------------------------------------------------

[[rules]]
id = "error.db-lock"
scenario = "error"
choice = "fix"
fixes = ["wait-for-database-lock"]
description = "Another connection holds the lock: wait for it, then run the same call."
[rules.when]
exception_types = '\bOperationalError\b'
message = '(?i)database( table)? is locked|could not obtain lock|deadlock'

[[rules]]
id = "error.encoding"
scenario = "error"
choice = "fix"
fixes = ["decode-with-detected-encoding", "encode-output-with-replacement"]
description = "Text not in the encoding expected: detect it, or replace what cannot be written."
[rules.when]
exception_types = '\b(UnicodeDecodeError|UnicodeEncodeError|UnicodeError)\b'

[[rules]]
id = "error.missing-import"
scenario = "error"
choice = "fix"
fixes = ["use-alternative-module"]
retry = false
description = "A module is not installed, and retrying will not install it: use its alternative."
[rules.when]
exception_types = '\b(ModuleNotFoundError|ImportError)\b'

[[rules]]
id = "error.path"
scenario = "error"
choice = "fix"
fixes = ["create-missing-parent-directory", "write-to-fallback-location"]
retry = false
description = "A path that is missing or may not be written: create its folder, or write elsewhere."
[rules.when]
exception_types = '\b(FileNotFoundError|NotADirectoryError|IsADirectoryError|PermissionError)\b'

[[rules]]
id = "error.memory"
scenario = "error"
choice = "fix"
fixes = ["halve-batch-size"]
retry = false
description = "Out of memory: the same batch fails again, a smaller one may pass."
[rules.when]
exception_types = '\bMemoryError\b'

[[rules]]
id = "error.failing-test"
scenario = "error"
choice = "give_up"
retry = false
strategy = "ask"
description = "A failing assertion fails again on retry: a human looks at it."
[rules.when]
exception_types = '\bAssertionError\b'

[[rules]]
id = "error.timeout"
scenario = "error"
choice = "fix"
fixes = ["lengthen-timeout"]
description = "The operation ran out of time: give it longer."
[rules.when]
exception_types = '\b(TimeoutError|TimeoutException|APITimeoutError|Timeout)\b'

[[rules]]
id = "error.connection-dropped"
scenario = "error"
choice = "fix"
fixes = ["reconnect-after-dropped-connection"]
description = "The other side reset, refused or closed the connection: reconnect after a wait."
[rules.when]
exception_types = '\b(ConnectionError|RemoteProtocolError|APIConnectionError|ConnectError)\b'

[[rules]]
id = "error.malformed-json"
scenario = "error"
choice = "fix"
fixes = ["extract-json-from-noise"]
description = "JSON wrapped in log lines or prose: take the JSON inside."
[rules.when]
exception_types = '\bJSONDecodeError\b'

[[rules]]
id = "error.indentation"
scenario = "error"
choice = "fix"
fixes = ["normalise-indentation", "strip-markdown-fences"]
retry = false
description = "Generated code with mixed or shifted indentation: normalise it."
[rules.when]
exception_types = '\b(IndentationError|TabError)\b'

[[rules]]
id = "error.syntax"
scenario = "error"
choice = "fix"
fixes = ["strip-markdown-fences", "normalise-indentation"]
retry = false
description = "Generated code that does not parse, often still in Markdown fences: strip them."
[rules.when]
exception_types = '\bSyntaxError\b'

[[rules]]
id = "error.missing-key"
scenario = "error"
choice = "fix"
fixes = ["use-declared-default"]
retry = false
description = "A configuration without a key the step needs: use the key's declared default."
[rules.when]
exception_types = '\bKeyError\b'

[[rules]]
id = "error.test-step"
scenario = "error"
choice = "give_up"
retry = false
strategy = "ask"
priority = -1
description = "A test step failed: a human looks at it (an error's own rule comes first)."
[rules.when]
step = '(^|[_.-])tests?([_.-]|$)'

# --- scenario "task_completed" ---------------------------------------------------------------

[[rules]]
id = "task.has-parent"
scenario = "task_completed"
choice = "wake_parent"
priority = 20
description = "A subtask is done: wake the parent task that waits for it."
[rules.when]
parent = '.'

[[rules]]
id = "task.queue-empty"
scenario = "task_completed"
choice = "end_run"
priority = 10
description = "Nothing is left in the queue: end the run."
[rules.when]
queued = '^0$'

[[rules]]
id = "task.next"
scenario = "task_completed"
choice = "next_task"
description = "Continue with the next task, by priority."

# --- scenario "action" -----------------------------------------------------------------------

[[rules]]
id = "action.destructive-high-impact"
scenario = "action"
choice = "ask"
strategy = "ask"
description = "A high-impact action that destroys or ships something waits for approval."
[rules.when]
action = '(?i)delete|drop|remove|deploy|publish|push|migrate'
impact = '(?i)^high$'
"""
