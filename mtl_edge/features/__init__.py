"""Features: log mel summary statistics per clip (cached on disk) and raw-waveform crops.

Submodules import librosa lazily; importing this package does no work.
"""
