"""The effect's edges: the `spectro-fx` CLI, live audio (PortAudio, JACK), MIDI, files, the browser UI.

They import the core (and the plugins through the registry); the core never imports them.
"""
