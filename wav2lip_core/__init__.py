"""Wav2Lip lip-sync core: pure Python + torch, no bpy.

Stages (one module each): decode -> faces -> crop/blend -> model -> encode, driven by
`pipeline.run(request, progress, cancel)`.
"""

__version__ = "0.1.0"
