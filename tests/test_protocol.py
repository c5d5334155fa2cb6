"""protocol.py's events and requests as dataclasses: every one reads back as itself, the wire
format is the one the engine always wrote, keys a side does not know ride along, and anything
that is not a message of the protocol is one ProtocolError of one line (never a KeyError)."""

from __future__ import annotations

import json

import pytest

from wav2lip_core import protocol as P

EVENTS = [
    P.Hello(version="0.1.0"),
    P.Note(message="face detector: haar"),
    P.Note(message="face detector: haar", job="shot-1"),
    P.Progress(stage=P.STAGE_DETECT, done=12, total=90),
    P.Progress(stage=P.STAGE_SYNC, done=16, total=50, job="shot-1"),
    P.Done(out="/o/a.mp4", frames=90, seconds=4.2, cache_hit=False, frames_with_face=88, detector="box"),
    P.Done(job="shot-1", out="/o/a.mp4", frames=90, seconds=4.2, detector="box", warm=True),
    P.Error(job="shot-1", message="no face in frame 3"),
    P.Error(message="not a JSON request: x"),
    P.Cancelled(job="shot-1"),
]
REQUESTS = [
    P.JobRequest(id="shot-1", args=["--face", "f.mp4", "--fps", "25"]),
    P.FetchRequest(id="clip-1", args=["https://example.org/v", "--from", "1.5", "--out", "/m"]),
    P.MeterRequest(id="measure-1", args=["/clips/a.mp4", "--audio", "/d.wav", "--audio-start", "-0.25"]),
    P.CancelRequest(id="shot-1"),
    P.QuitRequest(),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_every_event_reads_back_as_itself(event):
    line = event.to_json()
    assert "\n" not in line
    assert P.parse_event(line) == event
    assert type(event).from_json(line) == event


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: type(r).__name__)
def test_every_request_reads_back_as_itself(request_):
    line = request_.to_json()
    assert P.parse_request(line) == request_
    assert type(request_).from_json(line) == request_


def test_the_wire_format_is_the_one_the_engine_always_wrote():
    assert P.Hello(version="0.1.0").to_json() == json.dumps(
        {"event": "hello", "protocol": P.PROTOCOL_VERSION, "version": "0.1.0"})
    assert P.Progress(stage="sync", done=1, total=2, job="a").to_json() == \
        '{"event": "progress", "stage": "sync", "done": 1, "total": 2, "job": "a"}'
    assert P.Note(message="m").to_json() == '{"event": "note", "message": "m"}'  # one-shot: no "job"
    assert P.Done(job="a", out="o", frames=3, seconds=0.5, warm=False).to_json() == \
        '{"event": "done", "job": "a", "out": "o", "frames": 3, "seconds": 0.5, "warm": false}'
    assert P.Error(message="x").to_json() == '{"event": "error", "job": null, "message": "x"}'
    assert P.Cancelled(job="a").to_json() == '{"event": "cancelled", "job": "a"}'
    assert P.JobRequest(id="a", args=["--x"]).to_json() == \
        f'{{"op": "job", "id": "a", "args": ["--x"], "protocol": {P.PROTOCOL_VERSION}}}'
    assert P.QuitRequest().to_json() == '{"op": "quit"}'


def test_keys_this_side_does_not_know_ride_along():
    # (This test's unknown key was "sync_offset_measured" until the sync meter made it a field.)
    line = '{"event": "done", "job": "a", "out": "o", "frames": 3, "seconds": 1, "lip_score": -0.5}'
    done = P.parse_event(line)
    assert isinstance(done, P.Done) and done.frames == 3 and done.extra == {"lip_score": -0.5}
    assert json.loads(done.to_json()) == json.loads(line)
    known = P.parse_event('{"event": "done", "out": "o", "seconds": 1, "sync_offset_measured": -0.5, '
                          '"sync_confidence": 0.7, "sync_verdict": "mouth 0.5 frames early", "sync_offset": 0}')
    assert isinstance(known, P.Done) and known.extra == {} and known.sync_offset_measured == -0.5
    assert known.sync_confidence == 0.7 and known.sync_verdict == "mouth 0.5 frames early" and known.sync_offset == 0
    job = P.parse_request('{"op": "job", "id": "a", "args": [], "priority": 2}')
    assert isinstance(job, P.JobRequest) and job.protocol is None and job.extra == {"priority": 2}


def test_a_hello_without_a_version_is_no_version_of_ours():
    hello = P.parse_event('{"event": "hello"}')
    assert isinstance(hello, P.Hello) and hello.protocol is None != P.PROTOCOL_VERSION


@pytest.mark.parametrize("line, words, job", [
    ("some stray output", "not a JSON event: some stray output", None),
    ("[1, 2]", "must be a JSON object", None),
    ('{"stage": "sync"}', 'unknown event "event": null', None),
    ('{"event": "warning", "job": "a", "message": "m"}', 'unknown event "event": "warning"', "a"),
    ('{"event": "progress", "job": "a", "stage": "sync", "total": 2}', 'needs "done" (a whole number), not null', "a"),
    ('{"event": "progress", "stage": "sync", "done": true, "total": 2}', 'needs "done" (a whole number), not true', None),
    ('{"event": "done", "out": 5, "frames": 1, "seconds": 1}', 'needs "out" (a string), not 5', None),
])
def test_an_unknown_or_malformed_event_is_one_protocol_error(line, words, job):
    with pytest.raises(P.ProtocolError) as caught:
        P.parse_event(line)
    message = str(caught.value)
    assert words in message and "\n" not in message
    assert caught.value.job == job
    assert not isinstance(caught.value, KeyError)


@pytest.mark.parametrize("line, words, job", [
    ("not json\n", "not a JSON request: not json", None),
    ('{"op": "job", "id": "noargs"}', '"job" request needs "args" (a list of strings)', "noargs"),
    ('{"op": "job", "id": "x", "args": ["--fps", 25]}', 'needs "args" (a list of strings)', "x"),
    ('{"op": "cancel"}', '"cancel" request needs "id" (a string)', None),
    ('{"op": "pause", "id": "a"}', 'unknown request "op": "pause" (known: job, fetch, meter, faces, cancel, quit)', "a"),
])
def test_an_unknown_or_malformed_request_is_one_protocol_error_naming_its_job(line, words, job):
    with pytest.raises(P.ProtocolError) as caught:
        P.parse_request(line)
    assert words in str(caught.value) and "\n" not in str(caught.value)
    assert caught.value.job == job


def test_from_json_refuses_another_kind():
    with pytest.raises(P.ProtocolError, match='unknown event "event": "done"'):
        P.Progress.from_json(P.Done(out="o", frames=1, seconds=1).to_json())


def test_importing_protocol_imports_nothing_of_the_core():
    import subprocess
    import sys

    code = ("import sys, wav2lip_core.protocol; "
            "print(sorted(m for m in sys.modules if m.startswith('wav2lip_core')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # options.py is part of the protocol (its option names and choice lists), standard library only
    assert out.strip() == "['wav2lip_core', 'wav2lip_core.options', 'wav2lip_core.protocol']"
