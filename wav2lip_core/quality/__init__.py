"""quality: optional treatments of a sync, each behind its own option.

Owns: holding a still mouth through pauses in the sound (silence), and face restoration after
the paste (enhance, with the restorer file check in restorer_file).

May import: `wav2lip_core.protocol`, `wav2lip_core.errors`, `media`, `faces` and `model`.
Never `sync` or a front end.
"""
