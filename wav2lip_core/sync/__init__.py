"""sync: one lip-sync pass over a clip.

Owns: the request and result types and the request's check (request), what the output shows
(plan: which frames, which mel windows), cropping and pasting a face, and the --enhance step
that restores the pasted face (blend), the streamed, overlapped decode -> model -> blend ->
encode stages (stages, overlap) and the entry point `pipeline.run(request, progress, cancel)`,
a list of named steps; whom it syncs (who: the chosen people, identity, their tracks;
autoface: --face-at auto, per shot the face that follows the audio), several speakers each with
their own audio (speakers: the mix, each speaker's plan); --sync-offset auto's probe and
correction (autooffset).

Inside: pipeline imports request, plan, stages, who, speakers, autoface and autooffset (which imports plan and stages); stages imports plan and blend; request
imports blend. plan and stages take the fields they need and never import pipeline.

May import: everything below it (`media`, `model`, `faces`, `quality`, `protocol`, `errors`,
`files`). Never a front end.
"""
