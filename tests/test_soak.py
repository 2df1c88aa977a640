"""The soak script (`bench/soak.py`) on a tiny load, so it cannot rot: real replicas, a SIGKILL, faults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.harness import SECRETS

ROOT = Path(__file__).resolve().parents[1]


def test_soak_script_on_a_tiny_load_loses_and_doubles_nothing(tmp_path: Path) -> None:
    args = ["--turns", "24", "--threads", "4", "--replicas", "2", "--kill-every", "3"]
    args += ["--max-seconds", "150", "--workdir", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), *args],
        capture_output=True,
        text=True,
        timeout=200,
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "soak: 24 sent, 24 answered, 0 twice, 0 lost" in result.stdout
    assert "replica killed with SIGKILL and restarted" in result.stdout
    for log in tmp_path.glob("bot-*.log"):
        text = log.read_text(errors="replace")
        assert "Traceback" not in text, text[-3000:]
        assert not [s for s in SECRETS if s in text]
