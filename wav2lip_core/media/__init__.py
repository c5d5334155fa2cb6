"""media: the clip and the sound, in and out.

Owns: probing a clip (probe, with the image suffixes read as stills), decoding its frames
upright and in the right colours (decode, picture, colour), the model's sound: the 16 kHz window
and its mel spectrogram, and the mel window's size MEL_STEP (audio), the output's soundtrack at
the file's own rate (soundtrack), choosing an H.264 encoder (encoders) and writing the result
with its sound (encode), and a clip or a sound fetched from a URL into a cache (fetch; the
only code that drives yt-dlp is fetch_ytdlp).

May import: `wav2lip_core.protocol`, `wav2lip_core.errors`, `wav2lip_core.files`, and itself.
Nothing about faces, the model or a job.
"""
