"""The engine's options and choice lists, as the add-on and the CLI name them: each list of
choices (detectors, devices, precisions, runtimes, blends, silences, aligns, encoders, presets)
has its one source here, as do the option names the add-on passes, the detector weight files'
names and what install.py records.

Standard library only, no imports of the core; part of the protocol (protocol.py re-exports every
name, so callers read them as `protocol.X`), loaded by path into the add-on as protocol.py is."""

import os
from typing import Dict, Mapping, Optional, Tuple

# --- choices: (name, label, description); the first is the default --------------------------
DETECTOR_AUTO = "auto"
DETECTOR_BOX = "box"  # no detection: a fixed box given with --box
DETECTORS: Tuple[Tuple[str, str, str], ...] = (
    (DETECTOR_AUTO, "Auto", "BlazeFace when its weights are found, else OpenCV's Haar cascade"),
    ("blazeface", "BlazeFace", "Fast front-camera face detector (needs blazeface.pth + anchors.npy)"),
    ("blazeface-back", "BlazeFace (back camera)", "BlazeFace model for smaller, farther faces"),
    ("s3fd", "S3FD", "The original Wav2Lip detector: slowest, most robust (needs its weights)"),
    ("haar", "Haar (OpenCV)", "OpenCV's bundled frontal-face detector: needs no weights file"),
)
DEVICES: Tuple[Tuple[str, str, str], ...] = (
    ("auto", "Auto", "CUDA or Apple GPU when available, else CPU"),
    ("cuda", "CUDA", "NVIDIA GPU"),
    ("mps", "Apple GPU", "Apple silicon (MPS)"),
    ("cpu", "CPU", "Processor only"),
)
PRECISIONS: Tuple[Tuple[str, str, str], ...] = (
    ("auto", "Auto", "fp16 on CUDA, bf16 on CPUs with native bf16, else fp32"),
    ("fp32", "fp32", "Exact"),
    ("fp16", "fp16", "Half precision (GPU)"),
    ("bf16", "bf16", "bfloat16 (GPU, or CPUs with AVX512-BF16/AMX)"),
    ("int8", "int8", "Quantized, calibrated on the job's own frames (OpenVINO on CPU; opt-in, accuracy unverified)"),
)
RUNTIMES: Tuple[Tuple[str, str, str], ...] = (
    ("auto", "Auto", "OpenVINO on a CPU when it is installed, torch on a GPU"),
    ("torch", "PyTorch", "Any device"),
    ("openvino", "OpenVINO", "CPU only: faster than torch there; needed for int8"),
)
BLENDS: Tuple[Tuple[str, str, str], ...] = (
    ("feather", "Feather", "Soft-masked lower face"),
    ("hard", "Hard", "The original's square paste"),
    ("mouth", "Mouth", "Only the mouth, from dlib's 68 landmarks (landmarks extra); feather where they fail"),
)
SILENCE_HOLD = "hold"
SILENCE_SYNC = "sync"
SILENCES: Tuple[Tuple[str, str, str], ...] = (
    (SILENCE_HOLD, "Hold", "Keep the source mouth where the audio is silent (fading in and out)"),
    (SILENCE_SYNC, "Sync", "The original: the model drives every frame, silent or not"),
)
ALIGN_AUTO = "auto"
ALIGNS: Tuple[Tuple[str, str, str], ...] = (
    (ALIGN_AUTO, "Auto", "Level tilted heads before the model when landmarks are available (landmarks extra)"),
    ("off", "Off", "Never rotate the face crop (the original)"),
)
# --sync-offset is a nudge: beyond this many frames (10 s at 25 fps) it is a wrong value, not a sync
SYNC_OFFSET_MAX = 250.0
# --enhance-fidelity: CodeFormer's w, 0 (most restored) to 1 (closest to the input)
ENHANCE_FIDELITY_DEFAULT = 0.5
ENCODER_AUTO = "auto"
ENCODER_X264 = "libx264"
ENCODER_NVENC = "h264_nvenc"
ENCODERS: Tuple[Tuple[str, str, str], ...] = (
    (ENCODER_AUTO, "Auto", "NVIDIA's NVENC when the model runs on CUDA and NVENC works, else x264"),
    (ENCODER_X264, "x264", "CPU H.264 encoder; --preset trades speed for file size"),
    (ENCODER_NVENC, "NVENC", "NVIDIA GPU H.264 encoder (falls back to x264 with a note when it cannot start)"),
)
# H.264's quality scale for --crf (x264's CRF, NVENC's CQ): 0 lossless, 51 smallest.
CRF_RANGE: Tuple[int, int] = (0, 51)
CRF_DEFAULT = 18
# x264's own preset names, fastest first (x264's `placebo` is left out: far slower for ~1% size).
# Here the default is not the first: it was picked from a measured speed/size table (see
# wav2lip_core/encoders.py). They apply to x264 only; NVENC runs its own p4 preset.
PRESET_DEFAULT = "veryfast"
PRESETS: Tuple[Tuple[str, str, str], ...] = (
    ("ultrafast", "Ultrafast", "Fastest (1/4 to 1/2 of veryfast's CPU time); files 1.9-2.8x medium's"),
    ("superfast", "Superfast", "1/2 to 3/4 of veryfast's CPU time; files 1.1-1.7x medium's"),
    ("veryfast", "Veryfast", "Default: 1/3 to 1/2 of medium's CPU time; files no larger than medium's at the same CRF"),
    ("faster", "Faster", "1.3-2x veryfast's CPU time; files ~10% smaller than veryfast's at equal quality"),
    ("fast", "Fast", "2-2.5x veryfast's CPU time"),
    ("medium", "Medium", "x264's own default: 2.3-3.4x veryfast's CPU time"),
    ("slow", "Slow", "Smaller files, slower (not measured here)"),
    ("slower", "Slower", "Smaller still, much slower (not measured here)"),
    ("veryslow", "Veryslow", "Smallest files, slowest (not measured here)"),
)


def names(choices: Tuple[Tuple[str, str, str], ...]) -> Tuple[str, ...]:
    return tuple(c[0] for c in choices)


# --- command-line options the add-on passes (the CLI defines them with these names) ---------
OPT_FACE = "--face"
OPT_AUDIO = "--audio"
OPT_CHECKPOINT = "--checkpoint"
OPT_OUT = "--out"
OPT_DETECTOR = "--detector"
OPT_DETECTOR_WEIGHTS = "--detector-weights"
OPT_BOX = "--box"
OPT_DEVICE = "--device"
OPT_PRECISION = "--precision"
OPT_RUNTIME = "--runtime"
OPT_ENCODER = "--encoder"
OPT_PRESET = "--preset"
OPT_FPS = "--fps"
OPT_START_FRAME = "--start-frame"
OPT_FRAMES = "--frames"
# A JSON file with one clip time (seconds from the clip's first frame) per output frame: output
# frame k shows the clip frame on screen at that time, as Blender shows it; past the clip's end
# the last frame is held. The add-on's timing mapping; the CLI's --start-frame/--frames remain.
OPT_SOURCE_TIMES = "--source-times"
OPT_AUDIO_START = "--audio-start"
# Two output times (s): the sound is heard only between them, silence elsewhere (a sound strip
# trimmed inside the clip's range). The engine cuts it, so Blender needs no audio module for it.
OPT_AUDIBLE = "--audible"
OPT_DURATION = "--duration"
OPT_BLEND = "--blend"
OPT_SILENCE = "--silence"
OPT_SYNC_OFFSET = "--sync-offset"
OPT_ENHANCE = "--enhance"
OPT_ENHANCE_FIDELITY = "--enhance-fidelity"
OPT_ALIGN = "--align"
OPT_PROGRESS = "--progress"
OPT_PROTOCOL = "--protocol"
PROGRESS_JSON = "json"

# Detector weight files as face-alignment names them in torch's hub cache (the core looks there,
# install.py checks what --detector-weights points at, the panel says what Auto will find). A
# BlazeFace model needs its anchors file beside it.
S3FD_FILE = "s3fd-619a316812.pth"
BLAZEFACE_FILES: Dict[str, Tuple[str, str]] = {
    "blazeface": ("blazeface.pth", "anchors.npy"),
    "blazeface-back": ("blazefaceback.pth", "anchorsback.npy"),
}


def torch_hub_checkpoints(environ: Optional[Mapping[str, str]] = None) -> str:
    """The folder those files live in: torch.hub.get_dir()/checkpoints, by torch's own rule
    (TORCH_HOME, else XDG_CACHE_HOME/torch, else ~/.cache/torch; a variable set to "" counts as
    set, as torch reads it). The one copy of that rule: the core uses it until torch is loaded,
    the add-on's panel to say what Auto will find."""
    env = os.environ if environ is None else environ
    home = env.get("TORCH_HOME", os.path.join(env.get("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return os.path.join(os.path.expanduser(home), "hub", "checkpoints")

# --- what install.py records (JSON, in Blender's config folder and in the engine venv's root) --
CONFIG_NAME = "wav2lip_lipsync.json"
CONFIG_PYTHON = "python"  # the engine's interpreter
CONFIG_CHECKPOINT = "checkpoint"
CONFIG_DETECTOR_WEIGHTS = "detector_weights"  # BlazeFace/S3FD weights (--detector-weights)

# --- the sync meter (quality/meter.py, quality/meter_live.py, sync/autooffset.py) ------------
# Every sync measures its output's lip lag (the done event's sync_* keys); this turns that off.
OPT_NO_METER = "--no-meter"
# `--sync-offset auto`: sync a probe stretch, measure it, and use the correction (clamped to
# ±SYNC_OFFSET_AUTO_MAX frames, only when the measure is confident).
SYNC_OFFSET_AUTO = "auto"
SYNC_OFFSET_AUTO_MAX = 6.0
# `wav2lip serve` runs the meter too (protocol.MeterRequest, `wav2lip meter`'s arguments): its
# progress events have this stage, its done the sync_* keys.
STAGE_METER = "meter"

# --- who speaks (faces/cuts.py, faces/identity.py, faces/targets.py, sync/speakers.py) -------
# `--face-at X Y` follows the face at that clip pixel (x right, y down, in the clip's own
# upright pixels) at `--face-time SEC` (clip seconds, default 0); `--face-at auto` picks, per
# shot, the face whose mouth follows the audio best (the sync meter's signal).
OPT_FACE_AT = "--face-at"
OPT_FACE_TIME = "--face-time"
FACE_AT_AUTO = "auto"
# `--speaker X Y AUDIO[@SEC] [FACE_TIME [FROM TO]]`, repeatable: the face at clip pixel (X, Y)
# at clip time FACE_TIME (default --face-time) is driven by AUDIO, which starts SEC seconds into
# the output (default 0; negative: its start is cut), heard only between output seconds FROM and
# TO when given (a trimmed sound strip). With speakers --audio is not needed: the output's sound
# is the speakers' audios mixed, or --out-audio FILE.
OPT_SPEAKER = "--speaker"
SPEAKER_AT = "@"  # AUDIO@SEC


def split_speaker_audio(text: str) -> Tuple[str, str]:
    """A speaker's "AUDIO[@SEC]" as (AUDIO, "@SEC" or ""): the last "@" followed by a number;
    any other "@" belongs to the file's name ("take@home.wav")."""
    head, sep, tail = text.rpartition(SPEAKER_AT)
    if sep and head:
        try:
            float(tail)
        except ValueError:
            return text, ""
        return head, sep + tail
    return text, ""
OPT_OUT_AUDIO = "--out-audio"
