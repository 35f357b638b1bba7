"""The latency scenario: from LPUSH to the task's arrival in its todo queue, at fixed
rates, for resc and for the original's protocol, in the same run.

The load and the clock are native (bench/latency.c, compiled with cc at run time): an
open-loop producer thread that pushes each event at its scheduled time, and a consumer
thread that BRPOPs the todo queues. Latency counts from the scheduled time, so a stall
is not hidden by the events queued behind it. The original's protocol runs as the same
program's `original` mode: one event at a time, each command a round trip of its own,
as the original sends them.

The same loop written in Python (bench/original_python.py) runs beside them: the
difference between the two loops is what the language alone costs here, at the same
protocol.

Runs are interleaved (resc, then the original in C and in Python, at each rate and
variant, then again), and the medians of `runs` are reported, with the CPU each process
spent per event.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from resc.dev.embedded import EmbeddedRedis

SOURCE = Path(__file__).with_name("latency.c")
PERCENTILES = {"p50_ms": 50.0, "p90_ms": 90.0, "p99_ms": 99.0, "p99_9_ms": 99.9}
FULL_RATES = (1_000, 2_000, 5_000)
# The original's protocol cannot keep up with more on the machines measured so far.
ORIGINAL_RATES = (1_000, 2_000)
VARIANTS = ("set", "noset")


class LatencyError(Exception):
    pass


def build(workdir: Path) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise LatencyError("the latency scenario needs a C compiler (cc or gcc)")
    binary = workdir / "latency"
    done = subprocess.run(
        [compiler, "-O2", "-pthread", "-o", str(binary), str(SOURCE)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise LatencyError(f"bench/latency.c does not compile: {done.stderr.strip()[:2000]}")
    return binary


def cpu_s(pid: int) -> float:
    """User and system CPU seconds of a process (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def queues() -> list[str]:
    from bench.run import PLANTS

    return [f"trt/plant{p}/todo-queue" for p in range(PLANTS)]


def probe(binary: Path, server: EmbeddedRedis, rate: int, seconds: float) -> list[float]:
    """The latencies in milliseconds, sorted; every task checked to arrive once."""
    from bench.run import INPUT, WrongResult

    done = subprocess.run(
        [str(binary), "probe", str(server.port), str(rate), str(seconds), INPUT, *queues()],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    if done.returncode != 0:
        raise WrongResult(f"latency probe failed: {done.stderr.strip()[:500]}")
    head, *values = done.stdout.split("\n")
    words = head.split()
    sent, received, duplicates = int(words[1]), int(words[3]), int(words[5])
    if duplicates or received != sent:
        raise WrongResult(f"latency: {sent} sent, {received} received, {duplicates} twice")
    return [float(v) / 1000 for v in values if v]


def summary(latencies_ms: list[float], cpu_seconds: float) -> dict[str, float]:
    n = len(latencies_ms)
    result = {name: latencies_ms[min(n - 1, int(p / 100 * n))] for name, p in PERCENTILES.items()}
    result["max_ms"] = latencies_ms[-1]
    result["cpu_us_per_event"] = cpu_seconds * 1e6 / n
    return result


def check_empty(server: EmbeddedRedis) -> None:
    from bench.run import INPUT, TAKEN, WrongResult, in_hand

    client = server.client()
    left = client.llen(INPUT) + in_hand(client) + client.llen(TAKEN)
    left += sum(client.llen(q) for q in queues())
    client.close()
    if left:
        raise WrongResult(f"latency run: {left} events or tasks left over")


def run_resc(
    binary: Path, server: EmbeddedRedis, workdir: Path, variant: str, rate: int, seconds: float
) -> dict[str, float]:
    from bench.run import resc, rules_for

    server.client().flushall()
    with resc(server, rules_for(variant), workdir) as process:
        before = cpu_s(process.pid)
        latencies = probe(binary, server, rate, seconds)
        spent = cpu_s(process.pid) - before
    check_empty(server)
    return summary(latencies, spent)


def run_original(
    binary: Path,
    server: EmbeddedRedis,
    variant: str,
    rate: int,
    seconds: float,
    language: str = "c",
) -> dict[str, float]:
    """The original's protocol at `rate`: bench/latency.c's loop (`language` "c"), or the
    same loop in Python (bench/original_python.py)."""
    from bench.run import INPUT, TAKEN, WrongResult

    server.client().flushall()
    arguments = [str(server.port), INPUT, TAKEN, variant]
    if language == "c":
        command = [str(binary), "original", *arguments]
    else:
        command = [sys.executable, "-m", "bench.original_python", *arguments]
    process = subprocess.Popen(command, cwd=Path(__file__).parent.parent)
    try:
        _wait_in_take(server, process)
        before = cpu_s(process.pid)
        latencies = probe(binary, server, rate, seconds)
        spent = cpu_s(process.pid) - before
    finally:
        process.send_signal(signal.SIGTERM)
        if process.wait(10) != 0:
            raise WrongResult(f"the original's protocol exited with {process.returncode}")
    check_empty(server)
    return summary(latencies, spent)


def _wait_in_take(server: EmbeddedRedis, process: subprocess.Popen[bytes]) -> None:
    """Until the loop's connection waits in BRPOPLPUSH: a Python loop takes a while to
    start, and events pushed before would wait for it, not for the protocol."""
    from bench.run import WrongResult, wait_for

    client = server.client()
    try:
        wait_for(
            lambda: (
                process.poll() is not None
                or any(c.get("cmd") == "brpoplpush" for c in client.client_list())
            ),
            30,
            "the original's protocol to start",
        )
    finally:
        client.close()
    if process.poll() is not None:
        raise WrongResult(f"the original's protocol exited at start ({process.returncode})")


def run_all(
    server: EmbeddedRedis, workdir: Path, rates: tuple[int, ...], seconds: float, runs: int
) -> dict[str, Any]:
    """{"resc_set_1000": {...}, "original_set_1000": {...}, ...}: medians of `runs`."""
    binary = build(workdir)
    samples: dict[str, list[dict[str, float]]] = {}
    for _ in range(runs):
        for rate in rates:
            for variant in VARIANTS:
                key = f"{variant}_{rate}"
                samples.setdefault(f"resc_{key}", []).append(
                    run_resc(binary, server, workdir, variant, rate, seconds)
                )
                if rate in ORIGINAL_RATES:
                    samples.setdefault(f"original_{key}", []).append(
                        run_original(binary, server, variant, rate, seconds)
                    )
                    samples.setdefault(f"original_python_{key}", []).append(
                        run_original(binary, server, variant, rate, seconds, "python")
                    )
    return {
        name: {field: statistics.median(s[field] for s in runs_of) for field in runs_of[0]}
        for name, runs_of in samples.items()
    }


def table(results: dict[str, dict[str, float]]) -> list[str]:
    lines = [
        f"  {'latency':<28} {'p50':>7} {'p90':>7} {'p99':>7} {'p99.9':>7} {'max':>7}"
        f" {'CPU/event':>10}"
    ]
    for name, r in results.items():
        lines.append(
            f"  {name:<28} {r['p50_ms']:>7.2f} {r['p90_ms']:>7.2f} {r['p99_ms']:>7.2f}"
            f" {r['p99_9_ms']:>7.2f} {r['max_ms']:>7.2f} {r['cpu_us_per_event']:>7.0f} µs"
        )
    lines.append("  (milliseconds from LPUSH to the task's arrival; medians of the runs)")
    return lines
