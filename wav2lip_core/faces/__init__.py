"""faces: where the face is in every frame, and its shape.

Owns: the detectors (detectors), following one face through the clip and smoothing its box
(tracking), the per-clip box cache (cache), the 68-point landmarks (landmarks), the upright
alignment of a tilted face (align) and the mouth-and-chin mask (mouth_mask).

May import: `wav2lip_core.protocol`, `wav2lip_core.errors`, `media` (pictures) and `model`'s
input size (`model.checkpoint.IMG_SIZE`). Never `sync` or a front end.
"""
