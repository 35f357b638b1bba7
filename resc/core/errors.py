"""Every error resc raises on purpose derives from RescError.

    RescError
    ├── ConfigError        the config file cannot be used (exit status 2)
    ├── EventError         one event cannot be processed: it goes to the failed queue
    │   ├── MissingVariable    a pattern names a variable with no value for this event
    │   └── FetchError         a web service call failed (connection, timeout, status, body)
    │       └── FetchStopped       resc was stopping while the fetch waited to retry
    ├── InstanceIdTaken    another live resc runs under the instance id given to this one
    └── StoreError         Redis cannot be reached or refused a command
        └── HeartbeatLost      a watcher's heartbeat expired: it starts again, under a new id

Errors of the libraries underneath (redis-py, httpx) are converted where they enter:
in store.py and fetch.py.
"""

from __future__ import annotations

# Exit statuses of the resc command.
EXIT_OK = 0
EXIT_FATAL = 1  # a runtime error resc cannot carry on after
EXIT_USAGE = 2  # bad arguments or config
EXIT_FORCED = 130  # a second stop signal: exit at once


class RescError(Exception):
    """Root of every error resc raises on purpose."""


class ConfigError(RescError):
    """The config file is unusable; `problems` holds one located message per fault."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class EventError(RescError):
    """One event cannot be turned into tasks; the message is the reason recorded for it."""


class MissingVariable(EventError):
    def __init__(self, name: str) -> None:
        super().__init__(f"variable ${{{name}}} has no value for this event")
        self.name = name


class FetchError(EventError):
    """A fetch failed; the message names the URL and what went wrong."""


class FetchStopped(FetchError):
    """resc was asked to stop while a fetch waited to retry. Not a fault of the event: a
    watcher may leave the event in its taken queue rather than fail it."""


class StoreError(RescError):
    """Redis is unreachable or answered with an error."""


class HeartbeatLost(StoreError):
    """A watcher's heartbeat expired: another instance may have put its taken list back,
    so it starts again under a new instance id."""


class InstanceIdTaken(RescError):
    """Another live resc runs under the instance id given to this one."""


class RedisUnavailable(StoreError):
    """No connection or no answer: the command may or may not have run."""
