"""What every benchmark shares: a throwaway work folder, and the machine it ran on."""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK_PARENT = ROOT / "bench" / ".work"


def machine() -> str:
    """CPU count, CPU model, Python and SQLite versions, on one line."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    python = sys.version.split()[0]
    return f"{os.cpu_count()} CPUs ({model}), Python {python}, SQLite {sqlite3.sqlite_version}"


def new_work_dir(prefix: str) -> Path:
    """A fresh folder under bench/.work/ (git-ignored) for one run."""
    WORK_PARENT.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=WORK_PARENT))


def finish_work_dir(work: Path, ok: bool) -> None:
    """Remove the work folder after a good run; keep it, and say where, after a failure."""
    if ok:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"work dir kept for inspection: {work}", file=sys.stderr)
