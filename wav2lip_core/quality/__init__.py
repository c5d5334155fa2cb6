"""quality: optional treatments of a sync, each behind its own option.

Owns: holding a still mouth through pauses in the sound (silence), and the face restorer that
--enhance runs (enhance: loading, keeping and calling it; restorer_file: reading the file with
spandrel). Restoring a pasted face is the sync pass's step (sync.blend.restore_pasted), since
the paste is sync's: this package hands it a Restorer and never imports `sync`. The sync meter:
how far a mouth lags its sound (meter: the lag, its confidence and verdict, per shot;
meter_signals: the mouth's opening and the sound's speech-band energy at the frame times;
meter_live: the same measure taken from a sync's own finished frames as they are made).

May import: `wav2lip_core.protocol`, `wav2lip_core.errors`, `media`, `model` and `faces`.
Never `sync` or a front end.
"""
