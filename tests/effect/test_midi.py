"""MIDI input: the CC parser on malformed streams, routing through CC maps, learn mode, and
real python-rtmidi ports on the JACK server."""

import os
import threading
import time

import pytest

from spectro_fx.effect.io.ccmap import load_ccmap, parse_ccmap
from spectro_fx.effect.io.midi import CCParser, CCRouter, MidiInput, load_full_map
from spectro_fx.effect.core.params import REGION_PARAMETERS
from spectro_fx.models.errors import ParameterError

PARAMS = {p.name: p for p in REGION_PARAMETERS}


@pytest.mark.parametrize(
    "stream, expected",
    [
        ([0xB0, 70, 10], [(0, 70, 10)]),
        # running status: one status byte, several controller/value pairs
        ([0xB3, 70, 10, 71, 20, 72, 30], [(3, 70, 10), (3, 71, 20), (3, 72, 30)]),
        # SysEx (any length) is skipped and cancels running status
        ([0xB0, 1, 2, 0xF0, 0x7E, 70, 10, 0xF7, 5, 6, 0xB1, 7, 8], [(0, 1, 2), (1, 7, 8)]),
        # real-time bytes may sit inside a message
        ([0xB0, 0xF8, 70, 0xFE, 10], [(0, 70, 10)]),
        # stray data, a truncated note-on, then a good CC
        ([5, 6, 0x90, 60, 0xB2, 7, 8], [(2, 7, 8)]),
        # non-CC channel messages (note, program change, pitch bend) are ignored
        ([0x90, 60, 100, 0xC0, 5, 0xE0, 0, 64, 0xB0, 9, 9], [(0, 9, 9)]),
        # system common cancels running status: its data bytes and the next pair are dropped
        ([0xB0, 1, 2, 0xF2, 3, 4, 5, 6], [(0, 1, 2)]),
        # values that are not bytes at all
        ([300, -1, "x", None, 0xB0, 70, 127], [(0, 70, 127)]),
        ([], []),
    ],
)
def test_parser_keeps_only_well_formed_control_changes(stream, expected):
    assert CCParser().feed(stream) == expected


def test_parser_carries_running_status_and_sysex_across_messages():
    parser = CCParser()
    assert parser.feed([0xB0, 70, 1]) == [(0, 70, 1)]
    assert parser.feed([71, 2]) == [(0, 71, 2)]  # running status from the previous message
    assert parser.feed([0xF0, 1, 2]) == []  # SysEx split over messages
    assert parser.feed([3, 4, 0xF7]) == []
    assert parser.feed([72, 3]) == []  # SysEx cancelled running status
    assert parser.ignored >= 1


def _router(ccmap, **kw):
    got = []
    router = CCRouter(ccmap, parameters=PARAMS, emit=lambda n, v, t: got.append((n, v, t)), clock=lambda: 1.5, **kw)
    return router, got


def test_default_map_routes_both_knob_banks_on_channel_1():
    ccmap = load_full_map(None)
    active, inactive = ccmap.restricted_to(PARAMS)
    assert {b.parameter for b in inactive} == {"inpaint.temperature", "noise.amount", "dropout.channels"}
    router, got = _router(active)
    router.on_message([0xB0, 70, 0])
    router.on_message([0xB0, 22, 127])
    router.on_message([0xB1, 70, 64])  # channel 2: not bound
    router.on_message([0xB0, 76, 64])  # noise.amount: not in this chain
    assert got == [("low_hz", pytest.approx(40.0), 1.5), ("high_hz", pytest.approx(20000.0), 1.5)]
    assert router.messages == 4 and router.changes == 2


def test_learn_binds_the_next_knob_and_writes_the_map_atomically(tmp_path):
    path = tmp_path / "knobs.toml"
    path.write_text('[[binding]]\nparameter = "wet"\ncc = 1\n')
    full = load_full_map(path, learn="high_hz")
    learned = []
    router, got = _router(full, learn="high_hz", learn_path=path, full_map=full, on_learned=learned.append)
    router.on_message([0xB2, 33, 0])  # CC 33 on channel 3 is the knob that moved first
    assert learned == [f"bound CC 33 on channel 3 to high_hz; wrote {path}"]
    ccmap = load_ccmap(path)
    assert [(b.parameter, b.cc, b.channel, b.curve) for b in ccmap.bindings] == [
        ("wet", 1, None, "linear"),
        ("high_hz", 33, 3, "log"),
    ]
    assert not [p for p in os.listdir(tmp_path) if p != "knobs.toml"]  # no temp file left
    got.clear()
    router.on_message([0xB2, 33, 127])
    router.on_message([0xB0, 1, 127])
    assert got == [("high_hz", pytest.approx(24000.0), 1.5), ("wet", 1.0, 1.5)]
    # only the first knob is learnt
    router.on_message([0xB2, 34, 5])
    assert len(learned) == 1


def test_learn_into_a_new_file_and_learn_errors(tmp_path):
    path = tmp_path / "new.toml"
    full = load_full_map(path, learn="wet")
    assert full.bindings == ()
    router, _ = _router(full, learn="wet", learn_path=path, full_map=full)
    router.on_message([0xB0, 9, 9])
    assert load_ccmap(path).bindings[0].cc == 9
    with pytest.raises(ParameterError, match="--learn: unknown parameter 'lowhz'; valid: low_hz, high_hz"):
        load_full_map(path, learn="lowhz")
    with pytest.raises(ParameterError, match="does not exist"):
        load_full_map(tmp_path / "missing.toml")


def test_toggle_and_log_curves_through_the_router():
    ccmap = parse_ccmap(
        '[[binding]]\nparameter = "duty"\ncc = 5\ncurve = "toggle"\nmin = 0.25\nmax = 0.75\n'
        '[[binding]]\nparameter = "low_hz"\ncc = 6\nmin = 100.0\nmax = 10000.0\n'
    )
    router, got = _router(ccmap)
    router.on_message([0xB0, 5, 63, 5, 64, 6, 0, 6, 127])  # running status
    assert [(n, round(v, 6)) for n, v, _ in got] == [("duty", 0.25), ("duty", 0.75), ("low_hz", 100.0), ("low_hz", 10000.0)]


def test_malformed_map_reports_the_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[binding]]\nparameter = "low_hz"\ncc = = 4\n')
    with pytest.raises(ParameterError, match=r"bad\.toml: not valid TOML: .*line 3"):
        load_full_map(bad)


# ------------------------------------------------------------------ real ports on JACK


def _wait_for_port(client, name, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ports = client.get_ports()
        for i, p in enumerate(ports):
            if name in p:
                return i
        time.sleep(0.05)
    raise AssertionError(f"{name} never appeared: {client.get_ports()}")


@pytest.mark.jack
def test_port_by_name_receives_ccs_and_notices_when_it_vanishes(jack_server):
    import rtmidi

    from spectro_fx.effect.io.midi import list_midi_ports

    tag = f"sfxmidi{os.getpid()}"
    out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=f"{tag}-out")
    out.open_virtual_port("cc_out")
    received = []
    got = threading.Event()

    def on_message(message):
        received.append(list(message))
        got.set()

    midi = MidiInput(on_message, port=f"{tag}-out:cc_out", api="jack", client_name=f"{tag}-in")
    try:
        assert f"{tag}-out:cc_out" in list_midi_ports(api="jack")
        midi.open()
        assert midi.connected() is True
        time.sleep(0.1)
        out.send_message([0xB0, 74, 99])
        assert got.wait(2.0)
        assert received == [[0xB0, 74, 99]]
        out.close_port()
        out.delete()  # the controller is unplugged: its JACK client goes away
        deadline = time.monotonic() + 3
        while midi.connected() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert midi.connected() is False
        # the controller comes back under the same name: reconnect and listen again
        out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=f"{tag}-out")
        out.open_virtual_port("cc_out")
        wait_deadline = time.monotonic() + 3
        while not midi.reconnect() and time.monotonic() < wait_deadline:
            time.sleep(0.05)
        assert midi.connected() is True, midi.clients[0].get_ports()
        got.clear()
        time.sleep(0.1)
        out.send_message([0xB0, 75, 1])
        assert got.wait(2.0)
        assert received[-1] == [0xB0, 75, 1]
        out.close_port()
    finally:
        midi.close()


@pytest.mark.jack
def test_virtual_port_accepts_a_connection(jack_server):
    import rtmidi

    tag = f"sfxvirt{os.getpid()}"
    received = []
    got = threading.Event()
    midi = MidiInput(lambda m: (received.append(list(m)), got.set()), virtual="knobs", api="jack", client_name=tag)
    midi.open()
    out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=f"{tag}-sender")
    try:
        out.open_port(_wait_for_port(out, f"{tag}:knobs"))
        time.sleep(0.1)
        out.send_message([0xB5, 21, 64])
        assert got.wait(2.0)
        assert received == [[0xB5, 21, 64]]
        assert midi.connected() is None and "virtual" in midi.description
    finally:
        out.close_port()
        midi.close()


@pytest.mark.jack
def test_unknown_port_lists_the_ports(jack_server):
    with pytest.raises(ParameterError, match="--midi-in 'no-such-port-xyz' matches no MIDI port; ports:"):
        MidiInput(lambda m: None, port="no-such-port-xyz", api="jack", client_name="sfx-missing").open()
