"""sync: one lip-sync pass over a clip.

Owns: the request and its plan (which frames, which mel windows: plan), cropping and pasting a
face (blend), the streamed, overlapped decode -> model -> blend -> encode stages (stages,
overlap) and the entry point `pipeline.run(request, progress, cancel)`.

May import: everything below it (`media`, `faces`, `model`, `quality`, `protocol`, `errors`).
Never a front end.
"""
