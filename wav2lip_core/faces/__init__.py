"""faces: where the face is in every frame, and its shape.

Owns: the detectors and where their weights are (detectors, with the core's one rule for
torch's hub folder: torch_hub_checkpoints), shot boundaries (cuts), following the chosen people
through the clip and smoothing their boxes (tracking: track_faces, track_targets; whom each
track follows: targets; by dlib's face embedding when installed: identity), the faces on one frame for choosing one
(lookup), the per-clip box cache (cache), the 68-point
landmarks (landmarks), the upright alignment of a tilted face (align) and the mouth-and-chin
mask (mouth_mask).

May import: `wav2lip_core.protocol`, `wav2lip_core.errors`, `wav2lip_core.files`, `media`
(pictures) and `model`'s input size (`model.checkpoint.IMG_SIZE`). Never `quality`, `sync` or a
front end.
"""
