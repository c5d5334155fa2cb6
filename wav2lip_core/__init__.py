"""Wav2Lip lip-sync core, no bpy: the engine the Blender add-on runs as a separate process
(`python -m wav2lip_core`: one job per process, or `serve`: a warm engine taking JSON jobs).

The subpackages, each importing only those below it:

    jobs/      the front ends: the CLI, `serve`, `batch` and JOBS files
    sync/      one lip-sync pass: plan, crop/paste, the overlapped stages, `pipeline.run`
    quality/   optional treatments: silence, face restoration
    faces/     detectors, tracking, landmarks, alignment, the mouth mask
    model/     the network, checkpoints, the torch/OpenVINO executors and their cache
    media/     probe, decode, audio, encode
    protocol.py (+ options.py)   what the engine and the Blender add-on agree on (events, options)
    batch_format.py, serve_client.py   JOBS files; the one client of `serve` (add-on and batch)
    errors.py, files.py      our exceptions; the one atomic file write

`wav2lip_core.pipeline.run(LipSyncRequest(...))` is the documented entry point. Heavy libraries
are imported where they are needed: a run on a cached OpenVINO model never imports torch.
"""

__version__ = "0.1.0"
