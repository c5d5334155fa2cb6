"""Audio features exactly as the original Wav2Lip computes them (its `audio.py` + `hparams.py`).

The original ran on librosa 0.7. Two things changed since, and both matter to a model trained
on the old features: `librosa.filters.mel` became keyword-only (same Slaney filters), and
`librosa.stft` now pads with zeros by default instead of reflecting. We pass the old semantics
explicitly, so the features match bit-for-bit within float32 rounding.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import AudioError, Wav2LipError, reason

SAMPLE_RATE = 16000
N_FFT = 800
HOP = 200  # 12.5 ms: 80 mel columns per second
WIN = 800
NUM_MELS = 80
FMIN, FMAX = 55.0, 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS_VALUE = 4.0
MEL_STEP = 16  # columns per video frame window (0.2 s)
MEL_FPS = SAMPLE_RATE / HOP  # 80.0


# Decoding resumes this far before a window after a seek: AAC and MP3 frames depend on the one
# before (overlap-add, bit reservoir), so the first frames after a seek differ from a decode from
# the file's start; from 0.5 s on they were equal to the last bit (wav, flac, AAC in m4a, mp3).
SEEK_PREROLL_S = 0.5
# Source samples decoded beyond each end of a window before resampling to 16 kHz, so the
# resampler's filter (a few ms) sees the same neighbours as in a whole-file resample.
RESAMPLE_MARGIN_S = 0.1


def open_audio(path: str | os.PathLike):
    """(container, its first audio stream); AudioError when the file is missing, unreadable or
    has no sound. The caller closes the container."""
    import av  # local: keeps `import wav2lip_core.audio` light for callers that only need mels

    path = Path(path).expanduser()
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}. Check the --audio path.")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise AudioError(f"cannot read audio from {path} ({reason(e)}). Is it an audio or video file?") from None
    if not container.streams.audio:
        container.close()
        raise AudioError(f"{path} has no audio track. Give a wav/mp3/flac file or a video with sound.")
    return container, container.streams.audio[0]


def indexed_frames(container, stream, first_sample: int = 0):
    """(index, frame) of the decoded frames from the one holding `first_sample` (or a little
    before) to the end, where `index` is the position of the frame's first sample in a decode of
    the whole file from its start. Far from the start it seeks instead of decoding what comes
    before; the frames it yields are the whole-file decode's, sample for sample."""
    frames = container.decode(stream)
    head = next(frames, None)
    if head is None:
        return
    rate = head.sample_rate
    origin, base = head.pts, stream.time_base
    preroll = round(SEEK_PREROLL_S * rate)
    if origin is None or base is None or first_sample - preroll <= head.samples:
        yield from _counted(head, frames)
        return
    container.seek(origin + int((first_sample - preroll) / rate / base), stream=stream)
    frames = container.decode(stream)
    frame = next(frames, None)
    # An inexact seek (no timestamp, or past the preroll) decodes from the start instead.
    if frame is not None and frame.pts is not None and \
            round((frame.pts - origin) * base * rate) <= first_sample - preroll // 2:
        while frame is not None:
            if frame.pts is None:
                raise AudioError("the audio has frames without a timestamp after a seek; re-export it as wav")
            yield round((frame.pts - origin) * base * rate), frame
            frame = next(frames, None)
        return
    container.seek(origin, stream=stream)
    frames = container.decode(stream)
    head = next(frames, None)
    if head is not None:
        yield from _counted(head, frames)


def _counted(head, frames):
    """(index, frame) from the file's start, counting samples (no timestamps needed)."""
    index = 0
    yield index, head
    index += head.samples
    for frame in frames:
        yield index, frame
        index += frame.samples


def mono_samples(frame) -> np.ndarray:
    """An av.AudioFrame's samples as float32 mono: the mean of its channels, as librosa.to_mono
    downmixes (also the output's sound for channels of unknown order: soundtrack.py)."""
    data = frame.to_ndarray()
    if data.ndim == 1:
        data = data[None, :]
    if frame.format.is_packed:  # interleaved: (1, samples*channels)
        data = data.reshape(-1, len(frame.layout.channels)).T
    return _to_float(data).mean(axis=0)  # downmix as librosa.to_mono does


def _decode_mono(path, first: int, stop: int | None) -> tuple[np.ndarray, int, int]:
    """Mono float32 source-rate samples [first, stop) of the whole-file decode (stop None: to the
    end; fewer when the file ends sooner), with the source rate and the index of sample 0 (first,
    or the file's end when it ends before `first`)."""
    import av

    container, stream = open_audio(path)
    chunks, rate, at = [], None, None
    try:
        with container:
            for index, frame in indexed_frames(container, stream, first):
                rate = frame.sample_rate
                if stop is not None and index >= stop:
                    break
                end = index + frame.samples
                if end <= first:
                    at = end
                    continue
                mono = mono_samples(frame)
                chunks.append(mono[max(first - index, 0): None if stop is None else stop - index])
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise AudioError(f"cannot read audio from {path} ({reason(e)}). Is it an audio or video file?") from None
    if rate is None:
        raise AudioError(f"{path} has no audio samples (empty audio). Give a file with sound.")
    wav = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    return wav, rate, first if chunks else (at or 0)


def _resampled(wav: np.ndarray, rate: int, to: int = SAMPLE_RATE) -> np.ndarray:
    if rate == to:
        return wav
    import soxr  # what librosa.resample(res_type="soxr_hq") calls, without librosa's import cost

    return soxr.resample(wav, rate, to, quality="HQ").astype(np.float32)


def load_audio(path: str | os.PathLike, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read any audio PyAV can decode (wav 16/24-bit and WAVEX, mp3, flac, the audio track of
    mp4/mov/mkv) as float32 mono at `rate` (the model's 16 kHz unless asked). Raises AudioError."""
    wav, source_rate, _ = _decode_mono(path, 0, None)
    if wav.size == 0:
        raise AudioError(f"{Path(path).expanduser()} has no audio samples (empty audio). Give a file with sound.")
    return _resampled(wav, source_rate, rate)


def segment(wav: np.ndarray, start_s: float, duration: float | None) -> tuple[np.ndarray, float]:
    """The 16 kHz samples heard from file time `start_s` (zeros before the file starts),
    `duration` long (zeros after it ends; None: to the file's end), and that duration."""
    first = int(round(start_s * SAMPLE_RATE))
    if duration is None:
        duration = (len(wav) - first) / SAMPLE_RATE
        if duration <= 0:
            raise Wav2LipError(f"--audio-start {start_s:.3f} s is past the end of the audio "
                               f"({len(wav) / SAMPLE_RATE:.3f} s)")
    n = int(round(duration * SAMPLE_RATE))
    seg = np.zeros(n, np.float32)
    lo, hi = max(first, 0), min(first + n, len(wav))
    if hi > lo:
        seg[lo - first: hi - first] = wav[lo:hi]
    return seg, duration


def read_segment(path: str | os.PathLike, start_s: float, duration: float | None) -> tuple[np.ndarray, float]:
    """segment(load_audio(path), start_s, duration), decoding only that window of the file (and
    a margin for the resampler): a 2 s job from minute 25 of a long recording neither decodes
    nor holds the 25 minutes before it."""
    if duration is None:
        return segment(load_audio(path), start_s, None)
    first = int(round(start_s * SAMPLE_RATE))
    n = int(round(duration * SAMPLE_RATE))
    lo, hi = max(first, 0), max(first + n, 0)
    # The source rate is known once decoding starts; the window is asked for in a rate-free way:
    # margins in seconds, the start rounded down to a sample that falls on the 16 kHz grid.
    container, stream = open_audio(path)
    with container:
        rate = stream.codec_context.sample_rate or SAMPLE_RATE
    step = rate // math.gcd(rate, SAMPLE_RATE)  # source samples between two shared grid points
    margin = round(RESAMPLE_MARGIN_S * rate) if rate != SAMPLE_RATE else 0
    src_first = max((lo * rate // SAMPLE_RATE - margin) // step * step, 0)
    src_stop = -(-hi * rate // SAMPLE_RATE) + margin
    wav, got_rate, at = _decode_mono(path, src_first, src_stop)
    if got_rate != rate:  # a stream whose frames disagree with its header: the plain way
        return segment(load_audio(path), start_s, duration)
    seg = np.zeros(n, np.float32)
    if wav.size:
        out = _resampled(wav, rate)
        out_first = at * SAMPLE_RATE // rate
        a, b = max(lo, out_first), min(first + n, out_first + out.size)
        if b > a:
            seg[a - first: b - first] = out[a - out_first: b - out_first]
    elif first == 0 and at == 0:
        raise AudioError(f"{Path(path).expanduser()} has no audio samples (empty audio). Give a file with sound.")
    return seg, duration


def _to_float(data: np.ndarray) -> np.ndarray:
    if np.issubdtype(data.dtype, np.floating):
        return data.astype(np.float32, copy=False)
    info = np.iinfo(data.dtype)
    if info.min == 0:  # unsigned 8-bit PCM is offset binary
        return (data.astype(np.float32) - (info.max + 1) / 2) / ((info.max + 1) / 2)
    return data.astype(np.float32) / float(-info.min)


MEL_BASIS_FILE = Path(__file__).with_name("data") / "mel_basis.npy"


@lru_cache(maxsize=1)
def _mel_basis() -> np.ndarray:
    """librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600) with librosa
    0.7's defaults (Slaney mel scale and area normalisation), saved from librosa itself:
    importing librosa's filters/spectrum modules costs 3-5 s per process, paid by every job.
    tests/test_audio.py checks the file still equals what librosa computes."""
    return np.load(MEL_BASIS_FILE)


def mel_basis_from_librosa() -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=NUM_MELS, fmin=FMIN, fmax=FMAX, htk=False, norm="slaney")


# STFT frames computed at a time: ~10 MB of temporaries whatever the audio's length (the
# whole spectrum at once took ~1.3 MB per second of audio: 80 MB for a minute, 4.6 GB for an hour).
BLOCK_FRAMES = 512
_WINDOW = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann (fftbins=True)


def _padded_emphasised(wav: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Samples start..stop of the pre-emphasised signal (scipy.signal.lfilter([1, -0.97], [1], wav),
    in float64) after librosa's center=True reflect padding of N_FFT // 2 on each side."""
    n = wav.size
    idx = np.abs(np.arange(start, stop) - N_FFT // 2)  # reflected at the start
    idx = np.where(idx >= n, 2 * (n - 1) - idx, idx)  # and at the end
    x = wav[idx].astype(np.float64)
    return np.where(idx > 0, x - PREEMPHASIS * wav[np.maximum(idx - 1, 0)].astype(np.float64), x)


def _stft_magnitude(wav: np.ndarray, first: int, last: int) -> np.ndarray:
    """Columns first..last-1 of |librosa.stft(emphasised, n_fft=800, hop_length=200,
    win_length=800, center=True, pad_mode="reflect")| (librosa 0.7's framing)."""
    segment = _padded_emphasised(wav, first * HOP, (last - 1) * HOP + N_FFT)
    frames = np.lib.stride_tricks.sliding_window_view(segment, N_FFT)[::HOP]
    return np.abs(np.fft.rfft(frames * _WINDOW, axis=1)).T


def melspectrogram(wav: np.ndarray) -> np.ndarray:
    """(80, T) float32 normalised log-mel spectrogram, as the original's `audio.melspectrogram`,
    computed BLOCK_FRAMES columns at a time. Silence is valid: it maps to the floor value (-4),
    never NaN."""
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    if wav.size == 0:
        raise AudioError("the audio has no samples (empty audio). Give a file with sound.")
    if not np.all(np.isfinite(wav)):
        raise AudioError("the audio contains NaN or infinite samples. Re-export it as plain PCM.")
    if wav.size <= N_FFT // 2:
        raise AudioError(f"the audio is too short ({wav.size} samples): give at least 0.2 s of audio.")
    columns = 1 + wav.size // HOP
    out = np.empty((NUM_MELS, columns), np.float32)
    min_level = np.exp(MIN_LEVEL_DB / 20 * np.log(10))
    for first in range(0, columns, BLOCK_FRAMES):
        last = min(first + BLOCK_FRAMES, columns)
        mel = np.dot(_mel_basis(), _stft_magnitude(wav, first, last))
        db = 20 * np.log10(np.maximum(min_level, mel)) - REF_LEVEL_DB
        norm = (2 * MAX_ABS_VALUE) * ((db - MIN_LEVEL_DB) / (-MIN_LEVEL_DB)) - MAX_ABS_VALUE
        out[:, first:last] = np.clip(norm, -MAX_ABS_VALUE, MAX_ABS_VALUE)
    return out


def check_mel_length(n_mel_frames: int) -> None:
    if n_mel_frames < MEL_STEP:
        raise AudioError(
            f"the audio is too short: {n_mel_frames / MEL_FPS:.3f} s, shorter than one 0.2 s window. Give at least 0.2 s of audio."
        )


def mel_chunk_starts(n_mel_frames: int, fps: float) -> list[int]:
    """Start column of each output frame's 16-column mel window, by the original rule
    (`int(i * 80./fps)`, the last window clamped to the end). Its length is the number of
    frames the original makes; it stops 0.1-0.2 s short of the audio's end."""
    check_mel_length(n_mel_frames)
    if not fps > 0:
        raise AudioError(f"frame rate must be positive, got {fps}")
    step = MEL_FPS / fps
    starts = []
    i = 0
    while True:
        start = int(i * step)
        if start + MEL_STEP > n_mel_frames:
            starts.append(n_mel_frames - MEL_STEP)
            return starts
        starts.append(start)
        i += 1


def mel_window_start(time_s: float, n_mel_frames: int) -> int:
    """Window start for a frame shown at `time_s` (variable frame rate sources), clamped so the
    window stays inside the spectrogram."""
    return max(0, min(int(time_s * MEL_FPS), n_mel_frames - MEL_STEP))
