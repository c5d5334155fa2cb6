"""The command line of Set Up Engine's background process (setup_task.py starts it): `setup`,
`check` and `verify`, each answering in JSON lines on stdout, the last one the result
({"ok": ...}). Standard library only, no bpy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List, Optional

from .engine_setup import Options, set_up
from .setup_base import SetupError
from .setup_status import addon_status
from .setup_weights import describe_file


def _emit(**event) -> None:
    print(json.dumps(event), flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Set up or check the Wav2Lip engine (JSON lines on stdout).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("setup")
    s.add_argument("--venv", type=Path, required=True)
    s.add_argument("--source", type=Path, required=True)
    s.add_argument("--with", dest="extras", action="append", default=[])
    s.add_argument("--torch-index-url", default="")
    s.add_argument("--find-links", default="")
    s.add_argument("--python", dest="pythons", action="append", default=[])
    s.add_argument("--config-dir", dest="config_dirs", type=Path, action="append", default=[])
    c = sub.add_parser("check")
    c.add_argument("--venv", type=Path, required=True)
    c.add_argument("--config-dir", type=Path)
    c.add_argument("--checkpoint", default="")
    c.add_argument("--detector-weights", default="")
    v = sub.add_parser("verify")
    v.add_argument("kind", choices=("checkpoint", "detector"))
    v.add_argument("path", type=Path)
    v.add_argument("--engine-python", type=Path, required=True)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "setup":
            o = Options(env=a.venv, source=a.source, extras=tuple(a.extras), torch_index_url=a.torch_index_url,
                        find_links=a.find_links, pythons=tuple(a.pythons), config_dirs=tuple(a.config_dirs))
            py = set_up(o, lambda f, t: _emit(progress=round(f, 4), text=t), lambda line: _emit(log=line))
            _emit(ok=True, python=str(py))
        elif a.cmd == "check":
            _emit(ok=True, rows=addon_status(a.venv, a.config_dir, a.checkpoint, a.detector_weights))
        else:
            _emit(ok=True, text=describe_file(a.engine_python, a.kind, a.path))
    except SetupError as e:
        _emit(ok=False, error=str(e))
        return 1
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        _emit(ok=False, error=f"{where}{e.strerror or e}; check that path (its permissions, free space) and try again")
        return 1
    return 0
