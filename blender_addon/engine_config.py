"""The record of what install.py or Set Up Engine set up (engine Python, checkpoint, detector
weights): a JSON file the add-on reads for its empty preferences (in Blender's config folder)
and the core reads in the engine environment. Its name and keys are protocol.py's. Standard
library only, no bpy.
"""

from __future__ import annotations

import json
from pathlib import Path

from .wire import files
from .wire import protocol

CONFIG_NAME = protocol.CONFIG_NAME
CONFIG_PYTHON = protocol.CONFIG_PYTHON
CONFIG_CHECKPOINT = protocol.CONFIG_CHECKPOINT
CONFIG_DETECTOR_WEIGHTS = protocol.CONFIG_DETECTOR_WEIGHTS


def record_config(config_dir: Path, **values: str) -> Path:
    """Merge `values` into the JSON the add-on reads for its empty preferences (a None value
    removes its key). Atomic, and unchanged values leave the file untouched."""
    path = config_dir / CONFIG_NAME
    current = read_config(config_dir)
    merged = {**current, **{k: v for k, v in values.items() if v}}
    for k, v in values.items():
        if v is None:
            merged.pop(k, None)
    if merged == current and path.exists():
        return path
    config_dir.mkdir(parents=True, exist_ok=True)
    # Private (0600), as it always was: it names files of this user's.
    files.write_atomic(path, (json.dumps(merged, indent=2, sort_keys=True) + "\n").encode("utf-8"), private=True)
    return path


def read_config(config_dir: Path) -> dict:
    """What install.py or Set Up Engine recorded in `config_dir` ({} when nothing readable is)."""
    try:
        data = json.loads((config_dir / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
