"""media: the clip and the sound, in and out.

Owns: probing a clip (probe), decoding its frames upright and in the right colours (decode,
picture, colour), reading the sound window and its mel spectrogram (audio), choosing an H.264
encoder (encoders) and writing the result with its sound (encode); a clip from a URL (fetch,
with yt-dlp driven by fetch_ytdlp).

May import: `wav2lip_core.protocol`, `wav2lip_core.errors`, and itself. Nothing about faces, the
model or a job.
"""
