"""The documented entry point, `wav2lip_core.pipeline.run(LipSyncRequest(...))`.

The pass itself lives in `wav2lip_core.sync.pipeline` (the request and result types in
`wav2lip_core.sync.request`); this module keeps the README's import path working and adds
nothing."""

from .sync.pipeline import LipSyncRequest, LipSyncResult, run

__all__ = ["LipSyncRequest", "LipSyncResult", "run"]
