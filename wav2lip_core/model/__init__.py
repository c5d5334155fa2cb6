"""model: the Wav2Lip network and what runs it.

Owns: the network (network), reading the released checkpoints (checkpoint), the executors that
run it on torch or OpenVINO (runtime), the converted-model cache (model_cache), the OpenVINO
conversion and int8 quantisation (ov_build) and the device/precision choice (device).

May import: `wav2lip_core.protocol`, `wav2lip_core.errors`, and itself. It knows nothing of
clips, faces or jobs: it turns (mel, face) batches into mouths.
"""
