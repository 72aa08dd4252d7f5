"""The committed generated protobuf code matches proto/ (regenerate with `make proto`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
GENERATED = ROOT / "app" / "serialization" / "generated"


def test_generated_code_is_not_stale(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen_proto.sh"), str(tmp_path)],
        env={**os.environ, "PYTHON": sys.executable},
        check=True,
        capture_output=True,
        timeout=120,
    )
    for fresh in sorted(tmp_path.glob("events_pb2.py*")):
        committed = GENERATED / fresh.name
        assert committed.read_text() == fresh.read_text(), f"{committed} is stale: run `make proto`"
