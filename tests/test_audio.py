"""Audio loading and mel features against the reference implementation's outputs."""

from __future__ import annotations

import json
import wave

import av
import numpy as np
import pytest

from conftest import CONFORMANCE
from wav2lip_core.media.audio import load_audio, mel_chunk_starts, melspectrogram
from wav2lip_core.errors import AudioError


def test_mel_matches_reference():
    mel = melspectrogram(load_audio(CONFORMANCE / "speech_16k.wav"))
    ref = np.load(CONFORMANCE / "mel_reference.npy")
    assert mel.dtype == np.float32 and mel.shape == ref.shape
    assert np.abs(mel - ref).max() < 1e-4


def test_chunk_starts_match_reference_for_every_fps():
    n_mel = np.load(CONFORMANCE / "mel_reference.npy").shape[1]
    ref = json.loads((CONFORMANCE / "mel_chunk_starts.json").read_text())
    assert len(ref) >= 6
    for fps, starts in ref.items():
        assert mel_chunk_starts(n_mel, float(fps)) == starts, fps


@pytest.mark.parametrize(
    "name, seconds",
    [
        ("vretalk_audio1.wav", 5.0),  # 44.1 kHz stereo PCM16
        ("sadtalker_imagine.wav", 5.6),  # 48 kHz stereo 24-bit WAVEX
        ("sadtalker_RD_Radio31_000.wav", 8.0),  # 16 kHz stereo
        ("musetalk_eng.wav", 60.0),  # 16 kHz mono
        ("vretalk_face2.mp4", 5.0),  # AAC track of an mp4
        ("sadtalker_WDA_KatieHill_000.mp4", 8.0),
    ],
)
def test_media_audio_loads_at_16k_with_right_duration(media, name, seconds):
    wav = load_audio(media / name)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) / 16000 - seconds) < 0.2 + 0.05  # one 0.2 s window (+ container rounding)
    assert 0.05 < np.abs(wav).max() <= 1.0  # real, normalised sound, not silence or raw ints
    assert np.isfinite(wav).all()


def test_resampled_speech_matches_native_16k(media):
    """The 44.1 kHz stereo file and the 16 kHz conformance file are the same speech: after our
    downmix + resample their mels must agree closely."""
    ours = melspectrogram(load_audio(media / "vretalk_audio1.wav"))
    ref = np.load(CONFORMANCE / "mel_reference.npy")
    n = min(ours.shape[1], ref.shape[1])
    assert np.abs(ours[:, :n] - ref[:, :n]).mean() < 0.1


def _write_wav(path, samples, rate=16000):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, dtype=np.int16).tobytes())
    return path


def test_flac_and_mp3_load(tmp_path):
    t = np.arange(16000 * 2) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    for ext, codec in (("flac", "flac"), ("mp3", "libmp3lame")):
        path = tmp_path / f"tone.{ext}"
        with av.open(str(path), "w") as out:
            stream = out.add_stream(codec, rate=16000 if codec == "flac" else 22050, layout="mono")
            frame = av.AudioFrame.from_ndarray(tone[None, :], format="s16", layout="mono")
            frame.sample_rate = 16000
            resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=stream.rate)
            for f in resampler.resample(frame) + resampler.resample(None):
                for p in stream.encode(f):
                    out.mux(p)
            for p in stream.encode(None):
                out.mux(p)
        wav = load_audio(path)
        assert abs(len(wav) / 16000 - 2.0) < 0.1, ext
        assert 0.3 < np.abs(wav).max() < 0.7, ext


def test_silence_is_valid_and_gives_no_nans(tmp_path):
    wav = load_audio(_write_wav(tmp_path / "silence.wav", np.zeros(16000)))
    mel = melspectrogram(wav)
    assert np.isfinite(mel).all() and mel.max() == -4.0
    # 1 s -> 81 columns; windows at int(3.2 i) for i = 0..20 fit, plus the clamped last one.
    assert mel.shape[1] == 81 and len(mel_chunk_starts(mel.shape[1], 25)) == 22


def test_empty_audio_is_a_clear_error(tmp_path):
    with pytest.raises(AudioError, match="no audio samples"):
        load_audio(_write_wav(tmp_path / "empty.wav", []))


def test_audio_shorter_than_one_window(tmp_path):
    mel = melspectrogram(load_audio(_write_wav(tmp_path / "short.wav", np.ones(1000) * 1000)))
    with pytest.raises(AudioError, match="too short"):
        mel_chunk_starts(mel.shape[1], 25)


def test_unreadable_and_missing_files(tmp_path):
    bad = tmp_path / "noise.wav"
    bad.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioError, match="cannot read audio"):
        load_audio(bad)
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "missing.wav")


def test_video_without_audio_track(media):
    with pytest.raises(AudioError, match="no audio track"):
        load_audio(media / "liveportrait_d13.mp4")


def test_saved_mel_basis_equals_librosa():
    from wav2lip_core.media.audio import _mel_basis, mel_basis_from_librosa

    assert np.array_equal(_mel_basis(), mel_basis_from_librosa())


def test_stft_matches_librosa_with_old_padding():
    import librosa
    from scipy.signal import lfilter

    from wav2lip_core.media.audio import _stft_magnitude

    y = np.random.default_rng(0).standard_normal(16000 * 2).astype(np.float32)
    emphasised = lfilter([1, -0.97], [1], y.astype(np.float64))  # the original's preemphasis
    ref = np.abs(librosa.stft(y=emphasised, n_fft=800, hop_length=200, win_length=800, center=True, pad_mode="reflect"))
    assert np.allclose(_stft_magnitude(y, 0, ref.shape[1]), ref, rtol=1e-9, atol=1e-9)
    # Any run of columns, the padded ends included, is those columns of the whole.
    for first, last in ((0, 5), (37, 90), (ref.shape[1] - 4, ref.shape[1])):
        assert np.allclose(_stft_magnitude(y, first, last), ref[:, first:last], rtol=1e-9, atol=1e-9)


def test_the_mel_is_computed_in_blocks_with_memory_flat_in_the_audio_length(monkeypatch):
    import tracemalloc

    from wav2lip_core.media import audio

    rng = np.random.default_rng(1)
    short = rng.standard_normal(16000 * 7).astype(np.float32) * 0.1
    whole = melspectrogram(short)
    monkeypatch.setattr(audio, "BLOCK_FRAMES", 37)  # blocks that end anywhere, the last one short
    assert np.abs(melspectrogram(short) - whole).max() < 1e-5
    monkeypatch.undo()

    long = rng.standard_normal(16000 * 600).astype(np.float32) * 0.1  # 10 minutes
    tracemalloc.start()
    mel = melspectrogram(long)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # Beyond its own output (15 MB here), the work takes a block's worth, not ~1.3 MB per second
    # of audio (780 MB for these 10 minutes when the spectrum was made in one piece).
    assert peak - mel.nbytes < 40e6, f"{(peak - mel.nbytes) / 1e6:.0f} MB beyond the output"


def test_a_few_samples_are_a_clear_error():
    with pytest.raises(AudioError, match="too short"):
        melspectrogram(np.ones(100, np.float32))
