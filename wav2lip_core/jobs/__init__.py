"""jobs: the front ends that turn a command line, a warm engine's requests or a JOBS file into
sync passes.

Owns: the request building the front ends share (request: the parser, arguments to a
LipSyncRequest, a job's arguments checked), the one-shot CLI and top dispatcher (cli), the warm
engine (serve), JOBS files (jobfile), `wav2lip batch` (batch) and its local and Ray runners
(batch_local, batch_ray), `wav2lip fetch` (fetch_command), `wav2lip meter` (meter_command), and
inputs given as URLs, fetched before a sync (url_inputs).

May import: `sync` and everything below it, and the top-level protocol, batch_format and
serve_client. Nothing imports cli, the top dispatcher, except the package's `__main__` and the
`wav2lip` console script; cli reaches serve and batch, batch its runners, and all of them request.
"""
