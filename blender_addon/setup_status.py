"""The engine's status table: install.py --check's rows for the engine, its weights and its
optional parts, and the add-on's table of the same (Preferences > Set Up Engine). Standard
library only.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import List, Optional, Tuple

from .engine_config import CONFIG_CHECKPOINT, CONFIG_DETECTOR_WEIGHTS, read_config
from .setup_base import OPTIONAL_EXTRAS, installed, last_line, run, venv_python
from .setup_weights import detector_weights_status, weights_help


Row = Tuple[str, bool, str, bool]  # (item, ok, detail, needed)

ENGINE_INFO = ("import torch, av, wav2lip_core; from wav2lip_core.model.device import pick_device; "
               "d = pick_device('auto'); print(torch.__version__, d.type, av.__version__, "
               "'.'.join(map(str, av.library_versions['libavcodec'])))")


def engine_rows(env: Path, again: str) -> Tuple[List[Row], bool]:
    """engine environment, torch and device, ffmpeg; and whether the engine imports."""
    py = venv_python(env)
    rows: List[Row] = [("engine environment", py.exists(), str(env), True)]
    if not py.exists():
        return rows + [("torch and device", False, f"no engine: {again}", True),
                       ("ffmpeg (PyAV)", False, f"no engine: {again}", True)], False
    res = run([py, "-c", ENGINE_INFO], capture_output=True, text=True, cwd=tempfile.gettempdir())
    if res.returncode != 0:
        return rows + [("torch and device", False, f"engine does not import: {last_line(res.stderr) or '?'}", True),
                       ("ffmpeg (PyAV)", False, "not checked", True)], False
    tv, dev, avv, codec = res.stdout.split()[:4]
    return rows + [("torch and device", True, f"torch {tv}, device {dev}", True),
                   ("ffmpeg (PyAV)", True, f"PyAV {avv}, libavcodec {codec}", True)], True


def weights_rows(env: Path, engine_ok: bool, checkpoint: Optional[str], detector: Optional[str],
                 command: str) -> List[Row]:
    rows: List[Row] = []
    if checkpoint and Path(checkpoint).is_file():
        rows.append(("checkpoint", True, f"{checkpoint} ({Path(checkpoint).stat().st_size / 1e6:.0f} MB)", True))
    else:
        rows.append(("checkpoint", False, f"{'not found: ' + checkpoint if checkpoint else 'none recorded'}; "
                     f"{weights_help(command)}", True))
    if engine_ok:
        ok, detail = detector_weights_status(venv_python(env), detector, command)
        rows.append(("detector weights", ok, detail, False))
    else:
        rows.append(("detector weights", False, "not checked (no engine)", False))
    return rows


def optional_row(env: Path, engine_ok: bool) -> Row:
    if not engine_ok:
        return ("optional parts", False, "not checked (no engine)", False)
    code = "import importlib.util as u, sys; print(*[n for n in sys.argv[1:] if u.find_spec(n.split('=')[1])])"
    res = run([venv_python(env), "-c", code, *(f"{k}={m}" for k, m in OPTIONAL_EXTRAS.items())],
              capture_output=True, text=True, cwd=tempfile.gettempdir())
    have = [x.split("=")[0] for x in res.stdout.split()]
    missing = [x for x in OPTIONAL_EXTRAS if x not in have]
    detail = (", ".join(have) or "none") + (f" (not installed: {', '.join(missing)})" if missing else "")
    return ("optional parts", True, detail, False)  # (optional: none installed is fine)


def addon_status(env: Path, config_dir: Optional[Path], checkpoint: str = "", detector: str = "") -> List[Row]:
    """The add-on's table: install.py --check's engine, weights and optional parts rows."""
    cfg = read_config(config_dir) if config_dir else {}
    engine_cfg = read_config(env)
    rows, ok = engine_rows(env, "press Set Up Engine")
    if ok and not installed(env):
        rows[0] = ("engine environment", False, f"{env} (a set-up did not finish: press Set Up Engine)", True)
    ckpt = checkpoint or cfg.get(CONFIG_CHECKPOINT) or engine_cfg.get(CONFIG_CHECKPOINT)
    det = detector or cfg.get(CONFIG_DETECTOR_WEIGHTS) or engine_cfg.get(CONFIG_DETECTOR_WEIGHTS)
    return rows + weights_rows(env, ok, ckpt, det, "") + [optional_row(env, ok)]
