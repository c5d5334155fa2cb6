"""The README's picture of a two-speaker result: docs/two_speakers.png.

Two people (scikit-image's astronaut, NASA, public domain, and its cameraman, CC0) side by side,
with a cut at 1.2 s that swaps their sides; one `wav2lip` pass with two --speaker options: the
astronaut speaks from 0 s, the cameraman from 1.6 s. Each panel shows an output frame with each
tracked person outlined in their colour (astronaut yellow, cameraman blue) and, under each, what
the pass changed (|output - source|, amplified): only the person whose audio is speaking at that
moment, on whichever side the cut put them.
The model is the conformance checkpoint from ../shared (trained Wav2Lip weights cannot be
downloaded here), so the mouths it draws are not natural; the picture shows who is synced when.

    .venv/bin/python tools/who_picture.py [--out docs/two_speakers.png]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wav2lip_core.faces.detectors import DetectorSettings  # noqa: E402
from wav2lip_core.faces.lookup import faces_at  # noqa: E402
from wav2lip_core.media.audio import load_audio  # noqa: E402
from wav2lip_core.sync.pipeline import LipSyncRequest, run  # noqa: E402
from wav2lip_core.sync.speakers import Speaker  # noqa: E402

SHARED = ROOT.parent / "shared"
FPS, SIDE, CUT = 25, 256, 30  # the cut at frame 30 = 1.2 s
SHOWN = (10, 25, 45, 60)  # output frames in the picture
COLOURS = {"astronaut": (40, 200, 255), "cameraman": (255, 140, 40)}  # BGR


def _people() -> dict[str, np.ndarray]:
    import skimage.data as data

    grey = data.camera()
    return {"astronaut": cv2.resize(data.astronaut(), (SIDE, SIDE), interpolation=cv2.INTER_AREA),
            "cameraman": cv2.resize(np.stack([grey] * 3, -1), (SIDE, SIDE), interpolation=cv2.INTER_AREA)}


def _clip(path: Path, people: dict[str, np.ndarray], frames: int) -> None:
    a, b = people["astronaut"], people["cameraman"]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=FPS, options={"crf": "0", "preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = 2 * SIDE, SIDE, "yuv420p"  # as the output: untouched = identical
        for i in range(frames):
            rgb = np.hstack([a, b] if i < CUT else [b, a])
            c.mux(s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")))
        c.mux(s.encode())


def _wav(path: Path, samples: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "two_speakers.png")
    args = ap.parse_args()
    people = _people()
    speech = load_audio(SHARED / "conformance" / "speech_16k.wav")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        _clip(d / "two.mp4", people, 75)
        first = _wav(d / "astronaut.wav", speech[: int(1.4 * 16000)])
        second = _wav(d / "cameraman.wav", speech[int(1.6 * 16000): int(3.0 * 16000)])
        ckpt = d / "loud.pth"
        subprocess.run([sys.executable, str(SHARED / "conformance" / "make_checkpoint.py"), str(ckpt),
                        "--audio-gain", "8"], check=True)
        # BlazeFace's back (full-range) model: the front one sees a 2:1 two-shot at 128 px and
        # misses the cameraman's small grey face.
        weights = str(SHARED / "weights" / "blazeface" / "blazefaceback.pth")
        found = faces_at(d / "two.mp4", 0.0, DetectorSettings(kind="blazeface-back", weights=weights))
        (ax, ay), (cx, cy) = sorted(found.centre(k) for k in range(len(found.boxes)))  # left, right
        req = LipSyncRequest(face=str(d / "two.mp4"), audio="", checkpoint=str(ckpt), out=str(d / "out.mp4"),
                             detector_weights=weights, crf=0,
                             cache=False, duration=3.0,
                             speakers=(Speaker(ax, ay, str(first), 0.0), Speaker(cx, cy, str(second), 1.6)))
        notes: list[str] = []
        run(req, note=notes.append)
        print("\n".join(notes))
        src, out = _frames(d / "two.mp4"), _frames(d / "out.mp4")
    tiles = []
    for k in SHOWN:
        frame, before = out[k].copy(), src[k]
        change = np.abs(frame.astype(np.int16) - before.astype(np.int16)).max(axis=2)
        heat = cv2.applyColorMap(np.clip(change * 6, 0, 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
        left_is_astronaut = k < CUT
        for side, who in enumerate(("astronaut", "cameraman") if left_is_astronaut else ("cameraman", "astronaut")):
            x = side * SIDE
            for img in (frame, heat):
                cv2.rectangle(img, (x + 2, 2), (x + SIDE - 3, SIDE - 3), COLOURS[who], 2)
        t = k / FPS
        speaking = "astronaut" if t < 1.4 else ("cameraman" if t >= 1.6 else "nobody")
        band = np.full((36, 2 * SIDE, 3), 255, np.uint8)
        label = f"{t:.1f} s: {speaking} speaks" + ("  (after the cut)" if k >= CUT else "")
        cv2.putText(band, label, (8, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2, cv2.LINE_AA)
        tiles.append(np.vstack([band, frame, heat]))
    gap = np.full((tiles[0].shape[0], 12, 3), 255, np.uint8)
    grid = [np.hstack([tiles[0], gap, tiles[1]]), np.hstack([tiles[2], gap, tiles[3]])]
    picture = np.vstack([grid[0], np.full((12, grid[0].shape[1], 3), 255, np.uint8), grid[1]])
    picture = cv2.resize(picture, (picture.shape[1] * 3 // 4, picture.shape[0] * 3 // 4), interpolation=cv2.INTER_AREA)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), picture)
    print(f"wrote {args.out} ({picture.shape[1]}x{picture.shape[0]})")


if __name__ == "__main__":
    main()
