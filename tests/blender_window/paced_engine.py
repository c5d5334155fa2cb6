"""Runs the stand-in engine (tests/addon/fake_engine.py) and passes its stdout on one line at a
time, PACE seconds apart ($FAKE_ENGINE_PACE, default 0.08), so a job that would finish in a blink
takes a few seconds and a window can watch its progress move. stderr and the exit code are the
stand-in's own. Usage (as the fake interpreter's `-m wav2lip_core` replacement):

    python paced_engine.py ARGS...
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

FAKE_ENGINE = Path(__file__).resolve().parents[1] / "addon" / "fake_engine.py"


def main() -> int:
    pace = float(os.environ.get("FAKE_ENGINE_PACE", "0.08"))
    proc = subprocess.Popen([sys.executable, str(FAKE_ENGINE), *sys.argv[1:]], stdout=subprocess.PIPE,
                            text=True, encoding="utf-8", errors="replace")
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        time.sleep(pace)
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
