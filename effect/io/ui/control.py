"""What the page may read and change: parameters, ranges and live figures, as JSON.

Page moves enter the same queue as MIDI knob moves, so the worker applies them the same way.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Callable, Mapping

from spectro_fx.models.errors import ParameterError

from ...core.effects import Parameter


def parameter_json(name: str, parameter: Parameter, value: Any) -> dict:
    """One parameter as the page and ``GET /api/state`` describe it."""
    return {
        "name": name,
        "value": value,
        "default": parameter.default,
        "minimum": parameter.minimum,
        "maximum": parameter.maximum,
        "unit": parameter.unit,
        "kind": parameter.kind,
        "choices": list(parameter.choices),
        "scale": parameter.scale,
        "smoothing_s": parameter.smoothing_s,
        "help": parameter.help,
    }


def codemap_grid(engine: Any) -> dict | None:
    """Where the codemap's cells lie: row edges in Hz and the column period in seconds, read
    from the engine (None when the engine does not say)."""
    try:
        model_sr = float(engine.model_sr)
        n_fft = float(engine.stft_config.n_fft)
        row_hz = engine.freq_stride * model_sr / n_fft
        rows = int(engine.n_rows)
        column_s = float(engine.column_period_s)
    except (AttributeError, TypeError, ValueError, ZeroDivisionError):
        return None
    nyquist = model_sr / 2
    edges = [round(r * row_hz, 2) for r in range(rows + 1) if r * row_hz <= nyquist]
    return {"row_edges_hz": edges, "column_s": column_s, "rows": rows}


class ControlSurface:
    """The engine's parameters as the browser sees them, and the way back in.

    Parameters
    ----------
    engine : Engine
        Read only: ``parameters()``, ``values()``, ``resolve()`` (names are never hard-coded
        here: whatever the engine declares is shown).
    put_many : callable ({name: value}, received_s, source) -> None
        The live session's parameter queue (the one MIDI knobs feed), given each request's
        changes as one item; the worker applies what it holds between engine calls, smoothed,
        and stamps it in ``--stats-json``.
    clock : callable () -> float
        Stream time of "now", seconds (stamped on each change as ``received_s``).
    info : mapping, optional
        Constant facts for the page (chain, latency, sample rate ...).
    learn : callable (name or None) -> str, optional
        Arms MIDI learn for a parameter (None cancels); None when there is no MIDI input.
    midi_state : callable () -> dict, optional
        ``{"learning": name or None, "bindings": [...]}`` for the page.
    """

    def __init__(
        self,
        engine: Any,
        *,
        put_many: Callable[[Mapping[str, Any], float, str], None],
        clock: Callable[[], float],
        info: Mapping[str, Any] | None = None,
        learn: Callable[[str | None], str] | None = None,
        midi_state: Callable[[], dict] | None = None,
    ) -> None:
        self.engine = engine
        self.put_many = put_many
        self.clock = clock
        self.info = dict(info or {})
        self._learn = learn
        self._midi_state = midi_state
        self._stats: dict | None = None
        self._lock = threading.Lock()
        self.changes = 0

    # -- reading ---------------------------------------------------------------------------------

    def publish_stats(self, record: dict | None) -> None:
        """Keep the latest ``--stats-json`` record (called once a second by the session)."""
        if record is not None:
            with self._lock:
                self._stats = record

    def stats(self) -> dict | None:
        with self._lock:
            return self._stats

    def values(self) -> dict[str, Any]:
        return self.engine.values()

    def midi(self) -> dict:
        if self._midi_state is None:
            return {"available": False, "learning": None, "bindings": []}
        return {"available": self._learn is not None, **self._midi_state()}

    def state(self) -> dict:
        """Everything ``GET /api/state`` answers (JSON-ready)."""
        values = self.engine.values()
        parameters = [parameter_json(k, p, values.get(k)) for k, p in self.engine.parameters().items()]
        return {
            "parameters": parameters,
            "values": values,
            "stats": self.stats(),
            "grid": codemap_grid(self.engine),
            "midi": self.midi(),
            **self.info,
        }

    # -- changing --------------------------------------------------------------------------------

    def check(self, changes: Any) -> tuple[dict[str, Any], dict[str, dict]]:
        """Validate ``{name: value}`` all at once; returns ``(values, clamped)`` with full
        names. Raises ParameterError naming the first unknown name or bad value (nothing is
        applied then)."""
        if not isinstance(changes, dict) or not changes:
            raise ParameterError('the body must be a JSON object of {"name": value}, e.g. {"low_hz": 300}')
        parameters = self.engine.parameters()
        accepted: dict[str, Any] = {}
        clamped: dict[str, dict] = {}
        for name, value in changes.items():
            key = self.engine.resolve(str(name))  # unknown or ambiguous: ParameterError listing the valid ones
            parameter = parameters[key]
            if isinstance(value, (list, dict)) or value is None:
                raise ParameterError(f"{key}={value!r}: give a single number, true/false or a choice")
            if isinstance(value, float) and not math.isfinite(value):
                raise ParameterError(f"{key}={value!r} must be a finite number")
            owner = key.rsplit(".", 1)[0] if "." in key else ""
            coerced, was_clamped = parameter.coerce(value, owner=owner)
            accepted[key] = coerced
            if was_clamped:
                clamped[key] = {"asked": value, "value": coerced, "range": [parameter.minimum, parameter.maximum]}
        return accepted, clamped

    def apply(self, changes: Any) -> dict:
        """Validate and queue ``{name: value}``; returns the reply of ``POST /api/params``."""
        accepted, clamped = self.check(changes)
        now = self.clock()
        self.put_many(accepted, now, "ui")  # one item: applied before the same block
        self.changes += len(accepted)
        reply: dict[str, Any] = {"applied": accepted, "received_s": round(now, 4)}
        if clamped:
            reply["clamped"] = clamped
            reply["message"] = "; ".join(
                f"{k}={c['asked']} is outside [{c['range'][0]:g}, {c['range'][1]:g}], clamped to {c['value']:g}"
                for k, c in clamped.items()
            )
        return reply

    def learn(self, name: str | None) -> str:
        """Bind the next moved knob to ``name`` (None: stop waiting); returns what happens."""
        if self._learn is None:
            raise ParameterError("MIDI learn needs a MIDI input: start with --midi-in PORT or --midi-virtual")
        key = None if name is None else self.engine.resolve(str(name))
        return self._learn(key)
