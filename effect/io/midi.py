"""MIDI knobs for the live effect: python-rtmidi input ports, a safe CC parser, learn mode.

The only module that imports rtmidi, and only when a MIDI port is actually opened or listed.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from spectro_fx.models.errors import ParameterError

from .ccmap import CCMap, binding, known_parameters, load_ccmap, save_ccmap
from ..core.effects import Parameter
from ..core.ring import drain

INSTALL_HINT = "install python-rtmidi (pip install python-rtmidi)"
API_NAMES = ("auto", "jack", "alsa")
DEFAULT_CLIENT = "spectro-fx-midi"


JACK_MESSAGES: deque = deque(maxlen=50)  # what rtmidi's libjack said (kept, not printed)
_jack_handlers: list = []


def rtmidi_module():
    """Import rtmidi lazily, with a message that says what to install."""
    try:
        import rtmidi
    except ImportError:
        raise ParameterError(f"MIDI needs the rtmidi module: {INSTALL_HINT}") from None
    if not _jack_handlers:
        _keep_jack_messages(rtmidi)
    return rtmidi


def _keep_jack_messages(rtmidi) -> None:
    """python-rtmidi wheels carry their own libjack, which prints every error to stderr
    (three lines when the JACK server dies). Keep them in ``JACK_MESSAGES`` instead; our own
    messages say what went wrong. SPECTRO_FX_DEBUG=1 leaves libjack's printing alone."""
    import ctypes
    import glob

    _jack_handlers.append(None)  # once per process, found or not
    if os.environ.get("SPECTRO_FX_DEBUG"):
        return
    here = os.path.dirname(getattr(rtmidi, "__file__", "") or "")
    for path in glob.glob(os.path.join(here, "..", "python_rtmidi*", "libjack*.so*")):
        try:
            lib = ctypes.CDLL(path)
            handler = ctypes.CFUNCTYPE(None, ctypes.c_char_p)(
                lambda message: JACK_MESSAGES.append(message.decode(errors="replace"))
            )
            lib.jack_set_error_function(handler)
            lib.jack_set_info_function(handler)
            _jack_handlers.append(handler)  # ctypes callbacks must outlive their use
        except (OSError, AttributeError):
            pass


def choose_api(api: str = "auto", *, jack_audio: bool = False) -> int:
    """The rtmidi API constant for ``--midi-api``.

    'auto' picks JACK when the audio runs on JACK or when the ALSA sequencer is absent
    (no ``/dev/snd/seq``, as in containers), ALSA on other Linux machines, and the
    platform's own API elsewhere.
    """
    rtmidi = rtmidi_module()
    if api not in API_NAMES:
        raise ParameterError(f"--midi-api={api!r} must be one of {', '.join(API_NAMES)}")
    compiled = rtmidi.get_compiled_api()
    if api == "jack" or (api == "auto" and sys.platform.startswith("linux") and (jack_audio or not os.path.exists("/dev/snd/seq"))):
        if rtmidi.API_UNIX_JACK not in compiled:
            raise ParameterError("this python-rtmidi has no JACK support; reinstall it from a wheel with JACK")
        return rtmidi.API_UNIX_JACK
    if api == "alsa":
        if rtmidi.API_LINUX_ALSA not in compiled or not os.path.exists("/dev/snd/seq"):
            raise ParameterError("--midi-api alsa: the ALSA sequencer is not available (no /dev/snd/seq); try --midi-api jack")
        return rtmidi.API_LINUX_ALSA
    return rtmidi.API_UNSPECIFIED


def _open_client(api: int, name: str):
    rtmidi = rtmidi_module()
    try:
        return rtmidi.MidiIn(api, name=name)
    except Exception as exc:  # rtmidi.SystemError and friends: a server or driver is missing
        hint = " (is a JACK server running?)" if api == rtmidi.API_UNIX_JACK else ""
        raise ParameterError(f"cannot create a MIDI client: {exc}{hint}") from None


def list_midi_ports(*, api: str = "auto", jack_audio: bool = False) -> str:
    """MIDI input ports as ``index: name`` lines for ``spectro-fx --list-midi``."""
    chosen = choose_api(api, jack_audio=jack_audio)
    client = _open_client(chosen, DEFAULT_CLIENT + "-list")
    try:
        ports = client.get_ports()
        api_name = rtmidi_module().get_api_display_name(client.get_current_api())
    finally:
        client.delete()
    if not ports:
        return f"no MIDI input ports ({api_name}); use --midi-virtual to open one others can connect to"
    return "\n".join([f"MIDI input ports ({api_name}):"] + [f"  {i}: {p}" for i, p in enumerate(ports)])


class CCParser:
    """A MIDI byte-stream parser that yields Control Change messages and ignores the rest.

    Handles running status (data bytes after one status byte), real-time bytes anywhere,
    SysEx of any length, and garbage (stray data bytes, truncated messages) without raising.
    """

    # data bytes that follow each channel-voice status (high nibble)
    _DATA_LENGTH = {0x8: 2, 0x9: 2, 0xA: 2, 0xB: 2, 0xC: 1, 0xD: 1, 0xE: 2}
    # system common messages and their data bytes
    _COMMON_LENGTH = {0xF1: 1, 0xF2: 2, 0xF3: 1, 0xF6: 0}

    def __init__(self) -> None:
        self.status = 0  # running status (0: none)
        self.needed = 0
        self.data: list[int] = []
        self.in_sysex = False
        self.common_left = 0  # data bytes of a system common message still to skip
        self.ignored = 0  # bytes/messages dropped as garbage or not CC

    def feed(self, message: Iterable[int]) -> list[tuple[int, int, int]]:
        """Parse bytes; returns ``[(channel 0..15, cc 0..127, value 0..127)]``."""
        found = []
        for raw in message:
            try:
                byte = int(raw)
            except (TypeError, ValueError):
                self.ignored += 1
                continue
            if not 0 <= byte <= 0xFF:
                self.ignored += 1
                continue
            if byte >= 0xF8:  # real-time: may appear anywhere, leaves running status alone
                continue
            if byte == 0xF0:
                self.in_sysex = True
                self.status = 0
                continue
            if byte == 0xF7:
                self.in_sysex = False
                continue
            if byte >= 0x80:
                if self.in_sysex:  # a status byte ends an unterminated SysEx
                    self.in_sysex = False
                if self.data:
                    self.ignored += 1  # truncated message
                self.data = []
                if byte >= 0xF0:  # system common cancels running status
                    self.status = 0
                    self.common_left = self._COMMON_LENGTH.get(byte, 0)
                    continue
                self.common_left = 0
                self.status = byte
                self.needed = self._DATA_LENGTH[byte >> 4]
                continue
            if self.in_sysex:
                continue
            if self.status == 0:
                if self.common_left > 0:
                    self.common_left -= 1
                else:
                    self.ignored += 1  # a data byte without status
                continue
            self.data.append(byte)
            if len(self.data) == self.needed:
                if self.status >> 4 == 0xB:
                    found.append((self.status & 0x0F, self.data[0], self.data[1]))
                else:
                    self.ignored += 1
                self.data = []  # running status: the next data bytes reuse self.status
        return found


class CCRouter:
    """Turns CC messages into parameter changes through a CC map, or learns a binding.

    Parameters
    ----------
    ccmap : CCMap
        Bindings restricted to the engine's parameters.
    parameters : mapping of str to Parameter
        The engine's parameters (for learn mode defaults).
    emit : callable (name, value, received_s) -> None
        Receives each change; called on the MIDI thread.
    clock : callable () -> float
        Stream time of "now" (seconds), stamped on each change.
    learn : str, optional
        Parameter to bind to the next moved knob; the map is then written to ``learn_path``.
    """

    def __init__(
        self,
        ccmap: CCMap,
        *,
        parameters: Mapping[str, Parameter],
        emit: Callable[[str, float, float], None],
        clock: Callable[[], float],
        learn: str | None = None,
        learn_path: str | os.PathLike | None = None,
        full_map: CCMap | None = None,
        on_learned: Callable[[str], None] | None = None,
    ) -> None:
        self.ccmap = ccmap
        self.full_map = full_map if full_map is not None else ccmap
        self.parameters = dict(parameters)
        self.emit = emit
        self.clock = clock
        self.learn = learn
        self.learn_path = learn_path
        self.on_learned = on_learned
        self.parser = CCParser()
        self.messages = 0
        self.changes = 0
        self.learned: str | None = None
        self.learn_error: str | None = None
        if learn is not None:
            # validate now, not when the knob moves
            binding(learn, 0, parameters=self.parameters, where="--learn")

    def on_message(self, message: Iterable[int]) -> None:
        """Feed one message (a list of bytes as rtmidi delivers it)."""
        self.messages += 1
        now = self.clock()
        for channel, cc, value in self.parser.feed(message):
            if self.learn is not None:
                self._learn(channel, cc)
            for name, target in self.ccmap.handle(channel, cc, value):
                self.changes += 1
                self.emit(name, target, now)

    def _learn(self, channel: int, cc: int) -> None:
        name, self.learn = self.learn, None
        try:
            new = binding(name, cc, channel=channel + 1, parameters=self.parameters, where="--learn")
            self.ccmap = self.ccmap.with_binding(new)
            self.full_map = self.full_map.with_binding(new)
            if self.learn_path is not None:
                save_ccmap(self.full_map, self.learn_path)
            self.learned = f"bound CC {cc} on channel {channel + 1} to {name}" + (
                f"; wrote {self.learn_path}" if self.learn_path is not None else ""
            )
        except (ParameterError, OSError) as exc:
            self.learn_error = f"--learn {name}: {exc}"
        if self.on_learned is not None:
            self.on_learned(self.learned or self.learn_error or "")


class MidiInput:
    """A python-rtmidi input: an existing port (name substring or index) and/or a virtual port.

    Messages arrive on rtmidi's thread and go straight to ``on_message``. A port that vanishes
    (its client quit) just stops sending: :meth:`connected` reports it and audio carries on
    with the last values.
    """

    def __init__(
        self,
        on_message: Callable[[list[int]], None],
        *,
        port: str | None = None,
        virtual: str | None = None,
        api: str = "auto",
        jack_audio: bool = False,
        client_name: str = DEFAULT_CLIENT,
    ) -> None:
        self.on_message = on_message
        self.port_spec = port
        self.virtual = virtual
        self.api = choose_api(api, jack_audio=jack_audio)
        self.client_name = client_name
        self.clients = []
        self.port_name: str | None = None
        self.errors = 0

    def _callback(self, event, data=None) -> None:
        try:
            self.on_message(event[0])
        except Exception:  # a bad message must never take the MIDI thread down
            self.errors += 1

    def open(self) -> None:
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        if self.port_spec is not None:
            client = _open_client(self.api, self.client_name)
            self.clients.append(client)
            ports = client.get_ports()
            index = self._find(ports, self.port_spec)
            client.ignore_types(sysex=True, timing=True, active_sense=True)
            client.set_callback(self._callback)
            client.open_port(index, "midi_in")
            self.port_name = ports[index]
        if self.virtual is not None:
            client = _open_client(self.api, self.client_name + ("-virtual" if self.port_spec else ""))
            self.clients.append(client)
            client.ignore_types(sysex=True, timing=True, active_sense=True)
            client.set_callback(self._callback)
            try:
                client.open_virtual_port(self.virtual)
            except Exception as exc:
                raise ParameterError(f"cannot open a virtual MIDI port {self.virtual!r}: {exc}") from None

    @staticmethod
    def _find(ports: list[str], spec: str) -> int:
        listing = "; ".join(f"{i}: {p}" for i, p in enumerate(ports)) or "none"
        if spec.isdigit():
            if int(spec) < len(ports):
                return int(spec)
            raise ParameterError(f"--midi-in {spec}: no such MIDI port; ports: {listing}")
        matches = [i for i, p in enumerate(ports) if spec.lower() in p.lower()]
        if not matches:
            raise ParameterError(f"--midi-in {spec!r} matches no MIDI port; ports: {listing}")
        if len(matches) > 1:
            exact = [i for i in matches if ports[i] == spec]
            if len(exact) == 1:
                return exact[0]
            raise ParameterError(f"--midi-in {spec!r} is ambiguous; ports: {listing}")
        return matches[0]

    def connected(self) -> bool | None:
        """Whether the opened port still exists (None when only a virtual port is open)."""
        if self.port_name is None or not self.clients:
            return None
        try:
            return self.port_name in self.clients[0].get_ports()
        except Exception:
            return False

    def reconnect(self) -> bool:
        """Re-open the port by name if it came back (a controller plugged in again)."""
        if self.port_name is None or not self.clients:
            return False
        client = self.clients[0]
        try:
            ports = client.get_ports()
            if self.port_name not in ports:
                return False
            client.close_port()
            # without registering the callback again no message arrives on the new port
            client.cancel_callback()
            client.set_callback(self._callback)
            client.open_port(ports.index(self.port_name), "midi_in")
            return True
        except Exception:
            return False

    @property
    def description(self) -> str:
        parts = []
        if self.port_name:
            parts.append(self.port_name)
        if self.virtual:
            parts.append(f"virtual {self.client_name}:{self.virtual}")
        return ", ".join(parts)

    def close(self) -> None:
        for client in self.clients:
            try:
                client.cancel_callback()
                client.close_port()
                client.delete()
            except Exception:
                pass
        self.clients = []


def load_full_map(path: str | os.PathLike | None, *, learn: str | None = None) -> CCMap:
    """The CC map to use: ``path`` or the shipped default, validated against every known
    parameter (malformed TOML and unknown names raise ParameterError before audio starts).

    With ``learn``, a ``path`` that does not exist yet starts as an empty map.
    """
    from spectro_fx.assets import DEFAULT_MIDI_MAP, asset_path

    if learn is not None:
        binding(learn, 0, parameters=known_parameters(), where="--learn")
    if path is None:
        return load_ccmap(asset_path(DEFAULT_MIDI_MAP))
    if learn is not None and not Path(path).exists():
        return CCMap((), source=str(path))
    return load_ccmap(path)


class ParameterQueue:
    """Parameter changes from the MIDI thread (and the browser page, ``source="ui"``) to the
    worker: a deque (append and popleft are atomic in CPython), so neither side ever waits on
    the other."""

    def __init__(self) -> None:
        self.items: deque = deque(maxlen=4096)

    def put(self, name: str, value: float, received_s: float, source: str = "midi") -> None:
        self.items.append((name, value, received_s, source))

    def put_many(self, values: Mapping[str, Any], received_s: float, source: str = "ui") -> None:
        """Several changes as one item, so the worker applies them before the same block: a
        region dragged on the page moves its low and high edges together (two items could be
        drained between them, and one block would hear the new low with the old high)."""
        self.items.append([(name, value, received_s, source) for name, value in values.items()])

    def drain(self) -> list[tuple[str, float, float, str]]:
        out: list[tuple[str, float, float, str]] = []
        for item in drain(self.items):
            if isinstance(item, list):
                out.extend(item)
            else:
                out.append(item)
        return out
