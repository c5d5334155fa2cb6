"""model: the Wav2Lip network and what runs it.

Owns: the network (network), reading the released checkpoints and the model's input shapes
(checkpoint), the executors that run it on torch or OpenVINO and the set a long-lived process
keeps (runtime: Executor, TorchExecutor, OpenVINOExecutor, Executors), the converted-model
cache (model_cache), the OpenVINO conversion and int8 quantisation (ov_build) and the
device/precision choice (device).

May import: `wav2lip_core.protocol`, `wav2lip_core.errors`, `wav2lip_core.files`, itself, and
`media.audio` for the mel window's size (MEL_STEP, NUM_MELS: the features own it). It knows
nothing of clips, faces or jobs: it turns (mel, face) batches into mouths.
"""
