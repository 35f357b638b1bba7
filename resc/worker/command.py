"""The handler of `resc work`: runs a command once per task.

The command's arguments may hold `{task}` and, with a `--match` regex, `{name}` for each
of its named groups; the same values are in the environment as RESC_TASK and
RESC_<NAME>. Exit status 0 means done; anything else, or running past the timeout, is a
failure that the worker retries. The command's output goes to the log, line by line.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import IO

from resc.config.regex import Regex
from resc.core.logs import get_logger
from resc.worker.worker import AttemptFailed, TaskFailed

log = get_logger("resc.work")

# `{name}`, but not a shell's `${name}`, which the command's own shell expands.
PLACEHOLDER = re.compile(r"(?<!\$)\{(\w+)\}")
# How long to wait for the output of a finished command to be relayed: a background
# process it started may hold its output open.
OUTPUT_DRAIN_S = 2.0
# The last line of the command's stderr goes into a failure's reason, cut to this length.
MAX_REASON_LINE = 300

PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


def _load_prctl() -> Callable[[int, int], int] | None:
    """prctl(2), looked up once, before any fork: Linux only."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except OSError:
        return None
    prctl: Callable[[int, int], int] = libc.prctl
    return prctl


_PRCTL = _load_prctl()


def _die_with_the_worker(worker_pid: int) -> Callable[[], None] | None:
    """For Popen's preexec_fn: the command gets SIGKILL when the worker dies, even by
    kill -9 (which no handler sees). On Linux only; elsewhere None."""
    prctl = _PRCTL
    if prctl is None:
        return None

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != worker_pid:  # the worker died before prctl took effect
            os._exit(1)

    return preexec


class CommandFailed(AttemptFailed):
    """The command exited with a status other than 0, or ran past its timeout."""


class CommandHandler:
    """Runs `command` for each task. ValueError at construction when the command uses
    a placeholder that cannot have a value, or its program cannot be found."""

    def __init__(
        self, command: Sequence[str], match: Regex | None = None, timeout_s: float | None = None
    ) -> None:
        if not command:
            raise ValueError("no command")
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError(f"the timeout must be more than 0 seconds, not {timeout_s:g}")
        known = ["task", *(match.group_names if match else ())]
        used = [name for arg in command for name in PLACEHOLDER.findall(arg)]
        unknown = [name for name in used if name not in known]
        if unknown:
            hint = "" if match else " (named groups of a --match regex are placeholders too)"
            raise ValueError(
                f"{{{unknown[0]}}} in the command is not a placeholder; there are: "
                + ", ".join(f"{{{name}}}" for name in known)
                + hint
            )
        program = command[0]
        if not PLACEHOLDER.search(program) and shutil.which(program) is None:
            raise ValueError(f"command not found: {program}")
        self.command = list(command)
        self.match = match
        self.timeout_s = timeout_s
        self._running: set[subprocess.Popen[bytes]] = set()
        self._running_lock = threading.Lock()

    def __call__(self, task: str) -> None:
        variables = {"task": task}
        if self.match is not None:
            found = self.match.search(task.encode("utf-8"))
            if found is None:
                raise TaskFailed(f"the task does not match --match {self.match.source}")
            for name in self.match.group_names:
                variables[name] = found.get(name, b"").decode("utf-8")
        args = [
            PLACEHOLDER.sub(lambda m: variables.get(m.group(1), m.group(0)), arg)
            for arg in self.command
        ]
        env = dict(os.environ)
        env.update({f"RESC_{name.upper()}": value for name, value in variables.items()})
        self._run(args, env, task)

    def _run(self, args: list[str], env: dict[str, str], task: str) -> None:
        # Started and registered under the lock: kill_all (a second signal) cannot miss
        # a command that has just started.
        with self._running_lock:
            try:
                process = subprocess.Popen(
                    args,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    # Its own process group: a Ctrl-C meant for the worker lets the command
                    # finish, and a timeout kills whatever the command started too.
                    start_new_session=True,
                    # The death signal goes when the thread that started the command
                    # ends: this one, which waits for the command.
                    preexec_fn=_die_with_the_worker(os.getpid()),
                )
            except OSError as exc:
                raise CommandFailed(f"cannot run {args[0]}: {exc.strerror or exc}") from None
            self._running.add(process)
        last_error_line: list[str] = []
        assert process.stdout is not None and process.stderr is not None
        relays = [
            threading.Thread(
                target=_relay, args=(process.stdout, task, "stdout", None), daemon=True
            ),
            threading.Thread(
                target=_relay, args=(process.stderr, task, "stderr", last_error_line), daemon=True
            ),
        ]
        for relay in relays:
            relay.start()
        try:
            status = process.wait(self.timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise CommandFailed(
                f"the command ran past its timeout of {self.timeout_s:g} s and was killed"
            ) from None
        finally:
            for relay in relays:
                relay.join(OUTPUT_DRAIN_S)
            with self._running_lock:
                self._running.discard(process)
        if status != 0:
            if status < 0:
                reason = f"the command was killed by {_signal_name(-status)}"
            else:
                reason = f"the command exited with status {status}"
            if last_error_line:
                reason += f": {last_error_line[0][:MAX_REASON_LINE]}"
            raise CommandFailed(reason)

    def kill_all(self) -> None:
        """SIGKILL every running command and what it started."""
        with self._running_lock:
            running = list(self._running)
        for process in running:
            _kill_group(process)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group has exited already
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _relay(pipe: IO[bytes], task: str, stream: str, last_line: list[str] | None) -> None:
    with pipe:
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            log.info(line, task=task, stream=stream)
            if last_line is not None and line.strip():
                last_line[:] = [line.strip()]
