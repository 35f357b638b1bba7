"""The benchmark's quick mode: every scenario runs and checks its own result. Timing is
not judged here (see README, Performance); a wrong result fails."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_runs_every_scenario_with_correct_results(tmp_path: Path):
    out = tmp_path / "quick.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(out.read_text())
    scenarios = [
        "original",
        "ceiling",
        "ceiling_publish",
        "backlog_set",
        "backlog_noset",
        "backlog_10rules",
        "backlog_3makes",
        "backlog_2x",
        "api_client",
        "api_produce",
        "api_batch",
        "api_cycle",
    ]
    assert all(results[name] > 0 for name in scenarios)
    for name in (
        "resc_set_1000",
        "resc_noset_1000",
        "original_set_1000",
        "original_noset_1000",
        "original_python_set_1000",
        "original_python_noset_1000",
    ):
        measured = results["latency"][name]
        assert 0 < measured["p50_ms"] <= measured["p99_ms"] <= measured["max_ms"]
        assert measured["cpu_us_per_event"] > 0
    assert results["memory"]["events"] == 20_000
    assert results["api_latency"]["rate"] == 200 and results["api_latency"]["p99_ms"] > 0
    for name in ("api_backlog", "api_backlog_serve"):
        backlog = results[name]
        assert backlog["quiet"] > 0 and backlog["loaded"] > 0 and backlog["http_p99_ms"] > 0
        assert name in done.stdout
    assert "api_latency" in done.stdout
    assert results["fetch_original"] > 0
    for kind in ("fetch_5ms", "fetch_5ms_2x", "fetch_slow"):
        sweep = results[kind]
        assert sweep and all(figures["events_per_s"] > 0 for figures in sweep.values())
        assert kind in done.stdout
    assert results["fetch_client"]["httpx"]["requests_per_s"] > 0
    for name in ("cluster_backlog", "cluster_cross"):
        assert results[name] > 0 and results[f"{name}_one_node"] > 0
        assert name in done.stdout
    assert results["cluster_wait_0"] > 0 and results["cluster_wait_1"] > 0
    assert "cluster_wait" in done.stdout
    for name in scenarios:
        assert name in done.stdout
