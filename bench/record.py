"""Where the bench scripts put their numbers: `bench/results/NAME.json`, dated, with the machine.

A script run as `python bench/X.py` has `bench/` on its path: `from record import save`.
"""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def machine(**extra) -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), **extra}


def save(out: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    shown = path.relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path
    print(f"saved {shown}")
