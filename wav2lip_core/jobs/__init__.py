"""jobs: the front ends that turn a command line, a warm engine's requests or a JOBS file into
sync passes (and the two helper commands, fetch and meter).

Owns: the request building the front ends share (request: the parser, arguments to a
LipSyncRequest, a job's arguments checked), the one-shot CLI and top dispatcher (cli), the warm
engine (serve), JOBS files (jobfile), `wav2lip batch` (batch) and where it runs its jobs: on
local warm engines (batch_local) or on a Ray cluster (batch_ray); `wav2lip fetch URL`
(fetch_command: a clip or a sound from the web) and `wav2lip meter VIDEO` (meter_command: how far
the mouth lags its sound), `wav2lip faces VIDEO` (faces_command: the faces on one frame and
the pixel that picks each), inputs given as URLs, fetched before a sync (url_inputs), and what
the commands share on the terminal (console).

May import: `sync` and everything below it, and the top-level protocol, batch_format and
serve_client. Nothing imports cli, the top dispatcher, except the package's `__main__` and the
`wav2lip` console script; cli reaches serve, batch, fetch_command, meter_command and faces_command; batch
reaches batch_local and batch_ray; they all share request.
"""
