"""The networks room: op modules, H-DAS's macro skeleton, the deploy network, ONNX writing.

One definition serves the deploy network and the search supernet (`skeleton`, `ops`); every
module has an ONNX twin (`onnx_builder`), so `onnx_export` writes the same network torch
runs. `profile_source` hands the space's networks to `profiling` as candidates.
May import: `hwnas.space`, `profiling` (candidates), `targets`.
"""
