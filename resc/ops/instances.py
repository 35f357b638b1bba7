"""The resc instances at work on a config, with their heartbeats, for the dashboard.

Today an instance knows only itself: `running_instances` gives back the instance it is
told about (the daemon the dashboard runs in), or none for a dashboard without watchers.
Instances that announce themselves in Redis are read here, so that every caller sees
them at once."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Instance:
    """A resc instance: its id, where it runs, since when (unix seconds), how long ago it
    was last heard of (None: unknown), and the input queues of its watchers."""

    id: str
    host: str
    pid: int
    started_s: float
    heartbeat_age_s: float | None
    watchers: tuple[str, ...]


def running_instances(this: Instance | None) -> list[Instance]:
    """The instances at work: this one, when the caller runs inside one."""
    return [this] if this is not None else []
