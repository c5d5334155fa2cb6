"""jobs: the front ends that turn a command line, a warm engine's requests or a JOBS file into
sync passes.

Owns: the one-shot CLI (cli), the warm engine (serve), JOBS files (jobfile), `wav2lip batch`
(batch) and its local and Ray runners (batch_local, batch_ray).

May import: `sync` and everything below it. Nothing imports a front end, except the package's
`__main__` and the `wav2lip` console script.
"""
