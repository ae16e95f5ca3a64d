"""The real services the live effect stands on: PortAudio on JACK's dummy driver, and
python-rtmidi on JACK MIDI ports."""

import threading
import time

import pytest

pytestmark = pytest.mark.jack


def test_portaudio_duplex_stream_on_jack(jack_server):
    import sounddevice as sd

    sd._terminate()
    sd._initialize()  # re-scan: the JACK server may have started after import
    names = [d["name"] for d in sd.query_devices()]
    assert any("JACK" in sd.query_hostapis(d["hostapi"])["name"] for d in sd.query_devices()), names
    calls = []

    def callback(indata, outdata, frames, time_info, status):
        outdata[:] = indata
        calls.append(frames)

    with sd.Stream(samplerate=48000, blocksize=256, channels=2, dtype="float32", callback=callback):
        time.sleep(0.5)
    # 48000 / 256 = 187.5 callbacks per second
    assert len(calls) > 40
    assert set(calls) == {256}


def test_rtmidi_cc_round_trip_on_jack(jack_server):
    import rtmidi

    out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="sfx-test-out")
    out.open_virtual_port("cc_out")
    inp = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name="sfx-test-in")
    received = []
    got = threading.Event()

    def on_message(event, data=None):
        received.append(event[0])
        got.set()

    inp.set_callback(on_message)
    deadline = time.monotonic() + 5
    ports = []
    while time.monotonic() < deadline:
        ports = inp.get_ports()
        if any("sfx-test-out:cc_out" in p for p in ports):
            break
        time.sleep(0.05)
    index = next(i for i, p in enumerate(ports) if "sfx-test-out:cc_out" in p)
    inp.open_port(index)
    time.sleep(0.1)
    out.send_message([0xB0, 74, 99])  # CC 74 = 99 on channel 1
    assert got.wait(2.0), "no MIDI message arrived"
    assert received[0] == [0xB0, 74, 99]
    inp.close_port()
    out.close_port()
    del inp, out
