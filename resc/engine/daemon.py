"""The daemon: one thread per watcher, signals, reloading the config, an orderly stop."""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Protocol

from resc.config.load import load_config
from resc.config.models import EMBEDDED_REDIS, Config
from resc.config.models import Watcher as WatcherConfig
from resc.connection.edge import redact_url
from resc.core.errors import (
    EXIT_FATAL,
    EXIT_FORCED,
    EXIT_OK,
    ConfigError,
    InstanceIdTaken,
    StoreError,
)
from resc.core.logs import get_logger
from resc.core.metrics import WatcherStats
from resc.engine.expiry import ExpiryStats, SetExpiry
from resc.engine.instances import Identity
from resc.engine.scheduler import Scheduler, SchedulerStats
from resc.engine.store import Store
from resc.engine.watcher import Watcher

log = get_logger("resc.daemon")

CONFIG_POLL_S = 1.0
# After the grace period, the time watchers get to commit what is done and put the rest
# back, before resc stops waiting for them.
FINISH_S = 1.0


class Service(Protocol):
    """Something that runs beside the watchers (the HTTP server): started after them, so
    that it never sees a resc without watchers, and closed after they stop."""

    def start(self) -> None: ...

    def close(self) -> None: ...


ServiceFactory = Callable[["Daemon"], Service]

# The longest the main thread sleeps without a reason to wake.
IDLE_WAKE_S = 5.0


class _Waking(threading.Event):
    """An event whose set() also wakes the daemon's main thread."""

    def __init__(self, wake: threading.Event) -> None:
        super().__init__()
        self._wake = wake

    def set(self) -> None:
        super().set()
        self._wake.set()


def _settings(config: WatcherConfig) -> dict[str, object]:
    """Everything of a watcher but its rules: a change here needs a new watcher."""
    return config.model_dump(exclude={"rules"})


# Why a config cannot run (an empty list when it can), given the config and its file.
Refusal = Callable[[Config, Path], list[str]]


class Daemon:
    """Runs the watchers of a config until stopped. SIGHUP (or, with watch_config, a
    change of the file) reloads the config from config_path."""

    def __init__(
        self,
        config: Config,
        config_path: Path | None = None,
        watch_config: bool = False,
        grace_period_s: float | None = None,
        services: Sequence[ServiceFactory] = (),
        instance: str | None = None,
        heartbeat_ttl_s: float | None = None,
        refusal: Refusal | None = None,
    ) -> None:
        """`instance`: the base of the instance ids (default: host, pid and a random
        part); `heartbeat_ttl_s` overrides the config's heartbeat_ttl, also after a
        reload; `refusal`: why a reloaded config cannot run (for one meant for a Redis
        Cluster), checked before it replaces the running one."""
        self.config = config
        self._refusal = refusal
        self.identity = Identity(instance)
        self.heartbeat_ttl_s = heartbeat_ttl_s
        self.config_path = config_path
        self.watch_config = watch_config and config_path is not None
        self.grace_period_s = config.grace_period if grace_period_s is None else grace_period_s
        # The main thread sleeps until one of these is set (see wait()).
        self._wake = threading.Event()
        self.stop: threading.Event = _Waking(self._wake)
        self.reload_requested: threading.Event = _Waking(self._wake)
        self.failed: list[str] = []
        self._running: dict[str, tuple[Watcher, threading.Thread]] = {}
        # Input queue -> the stats of its latest watcher, kept when a reload removes it.
        self._stats: dict[str, WatcherStats] = {}
        self._config_mtime = self._mtime()
        # Kept across reloads, as the counters they hold.
        self.expiry_stats = ExpiryStats()
        self._expiry = SetExpiry(config, self.expiry_stats)
        self.scheduler_stats = SchedulerStats()
        self._scheduler = Scheduler(config, self.scheduler_stats)
        self.services = [make(self) for make in services]
        self._probe: Store | None = None
        self._probe_lock = threading.Lock()

    def start(self) -> None:
        # Before the set expiry: tasks that became due while resc was stopped are pushed
        # before their set entries could look forgotten.
        self._scheduler.start()
        for watcher_config in self.config.watchers:
            self._start_watcher(watcher_config)
        self._expiry.start()
        # After the watchers: /readyz must never see a resc with none.
        for service in self.services:
            service.start()
        log.info(
            "resc started", redis=redact_url(self.config.redis.url), watchers=len(self._running)
        )

    def _start_watcher(self, watcher_config: WatcherConfig) -> None:
        name = watcher_config.input_queue
        before = self._stats.get(name)
        stats = before.continued() if before is not None else WatcherStats()
        watcher = Watcher(
            watcher_config,
            self.config,
            stats=stats,
            on_delayed=self._scheduler.wake,
            identity=self.identity,
            heartbeat_ttl_s=self.heartbeat_ttl_s,
        )
        self._stats[name] = stats
        thread = threading.Thread(
            target=self._run_watcher,
            args=(watcher,),
            name=f"watcher {watcher_config.input_queue}",
            daemon=True,
        )
        self._running[watcher_config.input_queue] = (watcher, thread)
        thread.start()

    def _run_watcher(self, watcher: Watcher) -> None:
        try:
            watcher.run()
        except InstanceIdTaken as exc:
            log.error(
                "watcher stopped: stopping resc", watcher=watcher.config.input_queue, error=str(exc)
            )
            self.failed.append(watcher.config.input_queue)
            self.stop.set()
        except Exception:
            log.exception("watcher crashed: stopping resc", watcher=watcher.config.input_queue)
            self.failed.append(watcher.config.input_queue)
            self.stop.set()

    def _stop_watchers(self, names: list[str]) -> list[str]:
        """Stop these watchers: the events in hand get the grace period, then what is
        done is committed and the rest put back. Returns the names still running then."""
        deadline = time.monotonic() + self.grace_period_s
        for name in names:
            self._running[name][0].stop_by(deadline)
        for name in names:
            self._running[name][1].join(max(0.0, deadline + FINISH_S - time.monotonic()))
        unfinished = [name for name in names if self._running[name][1].is_alive()]
        for name in names:
            self._running[name][0].stats.running = False
            del self._running[name]
        return unfinished

    def reload(self) -> bool:
        """Re-read the config. A valid one replaces the running one: watchers whose only
        change is their rules switch to the new rules after their current batch, others
        are stopped and started anew. An invalid one is logged and changes nothing."""
        assert self.config_path is not None
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log.error(
                "config not reloaded: it has errors; the running config stays",
                problems="; ".join(exc.problems),
            )
            return False
        if new.redis.url == EMBEDDED_REDIS:
            log.error(
                'config not reloaded: redis.url "embedded" needs a restart of resc; '
                "the running config stays"
            )
            return False
        refused = self._refusal(new, self.config_path) if self._refusal else []
        if refused:
            log.error(
                "config not reloaded: it cannot run on this Redis; the running config stays",
                problems="; ".join(refused),
            )
            return False
        everything = (
            new.redis != self.config.redis
            or new.listener_channel != self.config.listener_channel
            or new.listener_format != self.config.listener_format
            or new.heartbeat_ttl != self.config.heartbeat_ttl
        )
        wanted = {w.input_queue: w for w in new.watchers}
        replaced = [
            name
            for name, (watcher, _) in self._running.items()
            if everything
            or name not in wanted
            or _settings(wanted[name]) != _settings(watcher.config)
        ]
        unfinished = self._stop_watchers(replaced)
        if unfinished:
            log.warning(
                "watchers still finishing their events after the grace period; their "
                "successors will not commit what they take over twice",
                watchers=", ".join(unfinished),
            )
        self.config = new
        self.grace_period_s = new.grace_period
        self._expiry.use(new)
        self._scheduler.use(new)
        for name, watcher_config in wanted.items():
            if name in self._running:
                self._running[name][0].use_rules(watcher_config)
            else:
                self._start_watcher(watcher_config)
        log.info(
            "config reloaded",
            path=str(self.config_path),
            watchers=len(self._running),
            restarted=", ".join(replaced) or "none",
        )
        return True

    # --- what the HTTP listener reads (from its own threads) ----------------------

    def watchers(self) -> list[tuple[str, WatcherStats]]:
        return list(self._stats.items())

    def instances(self) -> list[tuple[str, str, str]]:
        """(watcher, its instance id, host) of every running watcher that has joined."""
        running = [watcher for watcher, _ in list(self._running.values())]
        return [
            (w.config.input_queue, w.member.id, self.identity.host)
            for w in running
            if w.member.id is not None
        ]

    def queue_lengths(self) -> list[tuple[str, str, int]]:
        running = [watcher for watcher, _ in list(self._running.values())]
        # "taken": the events in this instance's hands.
        queues = [
            (w.config.input_queue, kind, queue)
            for w in running
            if w.member.id is not None
            for kind, queue in (
                ("input", w.config.input_queue),
                ("taken", w.member.taken_list),
                ("failed", w.config.failed_queue),
            )
        ]
        with self._probe_lock:
            if self._probe is None:
                self._probe = Store(self.config.redis.url)
            try:
                lengths = self._probe.lengths([queue for _, _, queue in queues])
            except StoreError:
                # Reads can be sent again: the connection may just have gone stale (a
                # Redis restart since the last scrape), and the next one is fresh.
                try:
                    lengths = self._probe.lengths([queue for _, _, queue in queues])
                except StoreError as exc:
                    log.debug("queue lengths not read for the metrics", error=str(exc))
                    return []
        return [(name, kind, n) for (name, kind, _), n in zip(queues, lengths, strict=True)]

    def not_ready(self) -> dict[str, str]:
        """Watcher -> why it is not taking events; empty when all of them are."""
        if self.stop.is_set():
            return {"resc": "stopping"}
        if not self._running:
            return {"resc": "no watcher running"}
        return {
            name: watcher.stats.not_ready_because
            for name, (watcher, _) in list(self._running.items())
            if not watcher.stats.ready
        }

    def _mtime(self) -> float | None:
        try:
            return self.config_path.stat().st_mtime if self.config_path else None
        except OSError:
            return None

    def _config_changed(self) -> bool:
        mtime = self._mtime()
        if mtime is None or mtime == self._config_mtime:
            return False
        self._config_mtime = mtime
        return True

    def wait(self) -> int:
        """Block until stopped, reloading when asked; then give watchers the grace period
        to finish the events in hand. Returns the exit status."""
        next_poll = time.monotonic() + CONFIG_POLL_S
        while True:
            # No polling: a stop or a reload wakes this thread (the timeout only bounds
            # the wait, in case a signal came between the check and the wait).
            self._wake.wait(CONFIG_POLL_S if self.watch_config else IDLE_WAKE_S)
            self._wake.clear()
            if self.stop.is_set():
                break
            reload = self.reload_requested.is_set()
            if self.watch_config and time.monotonic() >= next_poll:
                next_poll = time.monotonic() + CONFIG_POLL_S
                reload = self._config_changed() or reload
            if reload and self.config_path is not None:
                self.reload_requested.clear()
                self.reload()
        unfinished = self._stop_watchers(list(self._running))
        if unfinished:
            log.warning(
                "grace period over: unfinished events stay in their taken list, put "
                "back by another resc (or the next start) once the heartbeat expires",
                watchers=", ".join(unfinished),
            )
        self._expiry.close()
        self._scheduler.close()
        for service in self.services:
            service.close()
        if self._probe is not None:
            self._probe.close()
        if self.failed:
            return EXIT_FATAL
        log.info("resc stopped")
        return EXIT_OK

    def install_signal_handlers(self, on_forced_exit: Callable[[], None] | None = None) -> None:
        """SIGINT/SIGTERM stop resc (a second one exits at once, after on_forced_exit);
        SIGHUP reloads the config."""

        def on_stop(signum: int, _: FrameType | None) -> None:
            if self.stop.is_set():
                log.warning("second signal: exiting now", signal=signal.Signals(signum).name)
                if on_forced_exit is not None:
                    on_forced_exit()
                os._exit(EXIT_FORCED)
            log.info("stopping: finishing the events in hand", signal=signal.Signals(signum).name)
            self.stop.set()

        def on_reload(signum: int, _: FrameType | None) -> None:
            self.reload_requested.set()

        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGHUP, on_reload)


def run(
    config: Config,
    config_path: Path | None = None,
    watch_config: bool = False,
    services: Sequence[ServiceFactory] = (),
    on_forced_exit: Callable[[], None] | None = None,
    instance: str | None = None,
    heartbeat_ttl_s: float | None = None,
    refusal: Refusal | None = None,
) -> int:
    """Run resc until stopped by a signal; the exit status. RescError when a service
    (the HTTP server) cannot start."""
    daemon = Daemon(
        config,
        config_path,
        watch_config,
        services=services,
        instance=instance,
        heartbeat_ttl_s=heartbeat_ttl_s,
        refusal=refusal,
    )
    daemon.install_signal_handlers(on_forced_exit)
    daemon.start()
    # What start-up made (modules, config, compiled rules) lives as long as the process:
    # out of the collector's sight, a collection then scans only what events make.
    gc.freeze()
    return daemon.wait()
