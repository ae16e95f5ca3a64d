"""The effect's DSP and inference core: streaming STFT, region, parameters, the engine, the effect API.

Takes arrays and returns arrays: imports no audio device, MIDI, file or CLI library and no plugin.
"""
