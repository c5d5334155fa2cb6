"""Wav2Lip lip-sync core, no bpy: the engine the Blender add-on runs as a separate process
(`python -m wav2lip_core`: one job per process, or `serve`: a warm engine taking JSON jobs).

One module per stage: probe/decode (the clip), audio (the sound window and its mel), faces and
detectors (boxes), blend (crop and paste), runtime (the model: OpenVINO on a CPU, torch on a
GPU), encode (H.264 + AAC), driven by `pipeline.run(request, progress, cancel, ...)`. Heavy
libraries are imported where they are needed: a run on a cached OpenVINO model never imports torch.
"""

__version__ = "0.1.0"
