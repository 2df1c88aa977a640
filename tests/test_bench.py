"""The benchmark script runs end to end on a tiny load, so it cannot silently rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_quick_run_prints_and_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ack p99" in result.stdout and "+first p50" in result.stdout
    data = json.loads((out / "results.json").read_text())
    scenarios = {r["scenario"] for r in data["results"]}
    assert scenarios == {"ack", "latency", "inflight", "tiers", "burst"}
    for r in data["results"]:
        assert r["answered"] == r["turns"] and r["acks_late"] == 0
        assert r["peak_rss_mb"] > 0 and r["redis_cmds_per_turn"] > 0 and r["slack_calls_per_answer"] > 0
    # The burst goes through the README's command as it ships: the last answer is timed.
    [burst] = [r for r in data["results"] if r["scenario"] == "burst"]
    assert burst["last_answer_s"] > 0
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
