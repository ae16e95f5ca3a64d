"""The `--ui` server in-process, on a real engine and a real socket: the JSON API's round trips,
its refusals (token, Origin, Host, bad JSON, unknown names), the WebSocket's columns and rate."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from spectro_fx.models.errors import ParameterError

SR = 48000


@pytest.fixture
def engine(tiny_model):
    from spectro_fx.effect.core.engine import Engine

    return Engine(tiny_model, sr=SR, channels=1, chain="inpaint,noise")


@pytest.fixture
def queue():
    from spectro_fx.effect.io.midi import ParameterQueue

    return ParameterQueue()


@pytest.fixture
def server(engine, queue):
    from spectro_fx.effect.io.ui import ControlSurface, UIServer, ViewTap

    surface = ControlSurface(engine, put_many=queue.put_many, clock=lambda: 12.5, info={"chain": ["inpaint", "noise"], "sr": SR})
    ui = UIServer(surface, ViewTap(sr=SR), port=0)
    ui.start()
    yield ui
    ui.stop()
    assert not ui._thread.is_alive()


def request(server, path, *, token=True, body=None, headers=None, raw=None):
    """(status, parsed JSON or text) of a real HTTP request to the server."""
    url = f"http://127.0.0.1:{server.port}{path}"
    if token is True:
        url += f"?token={server.token}"
    elif token:
        url += f"?token={token}"
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as reply:
            status, text, kind = reply.status, reply.read().decode(), reply.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        status, text, kind = exc.code, exc.read().decode(), exc.headers.get("Content-Type", "")
    return status, (json.loads(text) if "json" in kind else text)


def test_state_lists_every_parameter_the_engine_declares(server, engine):
    status, state = request(server, "/api/state")
    assert status == 200
    declared = engine.parameters()
    assert [p["name"] for p in state["parameters"]] == list(declared)
    for p in state["parameters"]:
        d = declared[p["name"]]
        assert (p["minimum"], p["maximum"], p["unit"], p["kind"], p["default"]) == (
            d.minimum, d.maximum, d.unit, d.kind, d.default)
        assert p["value"] == engine.values()[p["name"]]
    assert state["chain"] == ["inpaint", "noise"]
    assert state["stats"] is None and state["midi"]["available"] is False
    # the codemap grid the page draws: rows of freq_stride bins, columns of time_stride hops
    row_hz = engine.freq_stride * engine.model_sr / engine.stft_config.n_fft
    assert state["grid"]["row_edges_hz"][1] == pytest.approx(row_hz, abs=0.01)
    assert state["grid"]["column_s"] == pytest.approx(engine.column_period_s)
    server.surface.publish_stats({"underruns": 3, "latency_ms": 40.0})
    assert request(server, "/api/state")[1]["stats"] == {"underruns": 3, "latency_ms": 40.0}


def test_params_round_trip_through_the_midi_queue(server, engine, queue):
    status, reply = request(server, "/api/params", body={"low_hz": 300, "amount": 0.25, "inpaint.method": "learned"})
    assert status == 200, reply
    assert reply["applied"] == {"low_hz": 300.0, "noise.amount": 0.25, "inpaint.method": "learned"}
    assert "clamped" not in reply
    queued = queue.drain()
    # stamped like a knob move: stream time received, source "ui"
    assert queued == [("low_hz", 300.0, 12.5, "ui"), ("noise.amount", 0.25, 12.5, "ui"),
                      ("inpaint.method", "learned", 12.5, "ui")]
    for name, value, _, _ in queued:  # what the live worker does with them
        engine.set(name, value)
    state = request(server, "/api/state")[1]
    assert state["values"]["low_hz"] == 300.0 and state["values"]["noise.amount"] == 0.25
    assert state["values"]["inpaint.method"] == "learned"


def test_one_request_reaches_the_worker_whole(queue):
    """A dragged region's low and high edges move before the same block: a worker draining
    while the page's requests arrive never takes half of one."""
    import threading

    done = threading.Event()

    def page():
        for i in range(20000):
            queue.put_many({"low_hz": float(i), "high_hz": float(i) + 1.0}, 0.0, "ui")
        done.set()

    thread = threading.Thread(target=page)
    thread.start()
    drained = []
    while not done.is_set() or queue.items:
        taken = queue.drain()
        assert len(taken) % 2 == 0
        for low, high in zip(taken[::2], taken[1::2]):
            assert (low[0], high[0], high[1] - low[1]) == ("low_hz", "high_hz", 1.0)
        drained += taken
    thread.join()
    # a full queue drops its oldest items (it holds 4096), never the newest, and never half of one
    assert drained[-2:] == [("low_hz", 19999.0, 0.0, "ui"), ("high_hz", 20000.0, 0.0, "ui")]


def test_out_of_range_values_are_clamped_and_the_reply_says_so(server, queue):
    status, reply = request(server, "/api/params", body={"high_hz": 99999, "duty": 0.5})
    assert status == 200
    assert reply["applied"] == {"high_hz": 24000.0, "duty": 0.5}
    assert reply["clamped"] == {"high_hz": {"asked": 99999, "value": 24000.0, "range": [20.0, 24000.0]}}
    assert "high_hz=99999 is outside [20, 24000], clamped to 24000" in reply["message"]
    assert [q[:2] for q in queue.drain()] == [("high_hz", 24000.0), ("duty", 0.5)]


@pytest.mark.parametrize(
    "body, message",
    [
        ({"nope": 1}, "unknown parameter 'nope'; valid: low_hz, high_hz"),
        ({"low_hz": 300, "nope": 1}, "unknown parameter 'nope'"),  # nothing applied, not even low_hz
        ({"low_hz": "loud"}, "low_hz='loud' must be a number in [20, 24000] Hz"),
        ({"inpaint.method": "magic"}, "inpaint.method='magic' must be one of"),
        ({"low_hz": [1, 2]}, "low_hz=[1, 2]: give a single number"),
        ({"low_hz": None}, "low_hz=None: give a single number"),
        ([1, 2], "the body must be a JSON object"),
        ({}, "the body must be a JSON object"),
    ],
)
def test_bad_changes_are_400_naming_them_and_nothing_is_applied(server, queue, body, message):
    status, reply = request(server, "/api/params", body=body)
    assert status == 400
    assert message in reply["error"]
    assert queue.drain() == []


def test_bad_json_is_400(server, queue):
    status, reply = request(server, "/api/params", raw=b"{low_hz: 3")
    assert status == 400 and "the body is not JSON" in reply["error"]
    assert request(server, "/api/params", raw=b"\xff\xfe")[0] == 400
    assert queue.drain() == []


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/api/state", "/ws"])
@pytest.mark.parametrize("token", [False, "wrong-token"])
def test_requests_without_the_token_are_refused(server, path, token):
    status, reply = request(server, path, token=token)
    assert status == 403
    assert "token" in reply["error"]


def test_post_without_the_token_changes_nothing(server, queue):
    status, _ = request(server, "/api/params", token="x" * len(server.token), body={"low_hz": 300})
    assert status == 403
    assert queue.drain() == []


def test_foreign_origin_and_foreign_host_are_refused(server, queue):
    evil = {"Origin": "http://evil.example"}
    status, reply = request(server, "/api/params", body={"low_hz": 300}, headers=evil)
    assert status == 403 and "http://evil.example" in reply["error"]
    assert queue.drain() == []
    # DNS rebinding: a page on evil.example resolved to 127.0.0.1 sends Host: evil.example
    rebound = {"Host": f"evil.example:{server.port}", "Origin": f"http://evil.example:{server.port}"}
    status, reply = request(server, "/api/state", headers=rebound)
    assert status == 403 and "not this machine" in reply["error"]
    # the page's own origin passes
    own = {"Origin": f"http://127.0.0.1:{server.port}"}
    assert request(server, "/api/params", body={"low_hz": 300}, headers=own)[0] == 200
    assert request(server, "/api/params", body={"low_hz": 300}, headers={"Host": f"localhost:{server.port}"})[0] == 200


def test_the_page_and_its_assets_are_served_with_the_token_and_no_cdn(server):
    status, page = request(server, "/")
    assert status == 200
    assert f"static/app.js?token={server.token}" in page and "__TOKEN__" not in page
    for name in ("app.js", "style.css"):
        status, text = request(server, f"/static/{name}")
        assert status == 200 and len(text) > 500
        assert "http://" not in text.replace("http://${", "") and "https://" not in text  # works offline
    assert request(server, "/static/secret.txt")[0] == 404


def test_learn_without_a_midi_input_is_409(server):
    status, reply = request(server, "/api/learn", body={"parameter": "low_hz"})
    assert status == 409 and "--midi-in" in reply["error"]


def test_learn_arms_the_router_through_the_surface(engine, queue):
    from spectro_fx.effect.io.ui import ControlSurface

    armed = []
    surface = ControlSurface(engine, put_many=queue.put_many, clock=lambda: 0.0, learn=lambda n: armed.append(n) or "ok",
                             midi_state=lambda: {"learning": armed[-1] if armed else None, "bindings": []})
    assert surface.learn("amount") == "ok" and armed == ["noise.amount"]
    assert surface.midi()["learning"] == "noise.amount"
    with pytest.raises(ParameterError, match="unknown parameter 'volume'"):
        surface.learn("volume")


async def _websocket(server, *, seconds, origin=None):
    import aiohttp

    url = f"ws://127.0.0.1:{server.port}/ws?token={server.token}"
    headers = {"Origin": origin} if origin else {}
    received = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, headers=headers) as ws:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                try:
                    message = await ws.receive(timeout=max(end - time.monotonic(), 0.01))
                except asyncio.TimeoutError:
                    break
                received.append((time.monotonic(), message.data))
    return received


def _feed(tap, seconds, stop):
    """The worker's side: 256-frame blocks of a 1 kHz sine (in) and a 3 kHz one (out), in real time."""
    t = np.arange(256) / SR
    k = 0
    while not stop.is_set():
        block_in = (0.5 * np.sin(2 * np.pi * 1000 * (t + k * 256 / SR)))[:, None].astype(np.float32)
        block_out = (0.5 * np.sin(2 * np.pi * 3000 * (t + k * 256 / SR)))[:, None].astype(np.float32)
        tap.push(block_in, block_out)
        k += 1
        time.sleep(256 / SR)


def test_websocket_streams_state_columns_and_values_at_a_bounded_rate(server, engine):
    from spectro_fx.effect.io.ui.view import unpack_columns

    assert server.tap.active is False  # no page: the worker copies nothing
    stop = threading.Event()
    feeder = threading.Thread(target=_feed, args=(server.tap, 3.0, stop), daemon=True)
    feeder.start()
    try:
        received = asyncio.run(_websocket(server, seconds=3.0, origin=f"http://127.0.0.1:{server.port}"))
    finally:
        stop.set()
        feeder.join()
    first = json.loads(received[0][1])
    assert first["type"] == "state" and [p["name"] for p in first["parameters"]] == list(engine.parameters())
    columns = [unpack_columns(data) for _, data in received if isinstance(data, bytes)]
    assert len(columns) >= 30
    view = first["view"]
    rows_hz = np.geomspace(view["fmin_hz"], view["fmax_hz"], view["n_rows"])
    body_in = np.concatenate([c[1] for c in columns[2:]])
    body_out = np.concatenate([c[2] for c in columns[2:]])
    # the brightest row is the sine's: 1 kHz in, 3 kHz out (rows 4 % apart)
    assert rows_hz[np.median(body_in.argmax(axis=1)).astype(int)] == pytest.approx(1000, rel=0.05)
    assert rows_hz[np.median(body_out.argmax(axis=1)).astype(int)] == pytest.approx(3000, rel=0.05)
    # a 0.5 sine is -6 dBFS; the scale maps -100..0 dB to 0..255. Between FFT bins (Hann
    # scalloping, up to 1.4 dB) and between rows (interpolated in dB) it reads up to 4 dB lower
    level_db = body_in.max() / 2.55 - 100
    assert -10.5 < level_db <= -5.5, level_db
    # columns follow each other in stream time without gaps
    starts = np.array([c[0] for c in columns])
    counts = np.array([c[1].shape[0] for c in columns])
    np.testing.assert_allclose(np.diff(starts), counts[:-1] * view["column_s"], atol=1e-9)
    # bounded: at most 30 column messages a second, each a few KB
    times = np.array([t for t, data in received if isinstance(data, bytes)])
    per_second = max(np.sum((times >= t) & (times < t + 1.0)) for t in times)
    assert per_second <= 31
    assert max(len(data) for _, data in received[1:]) < 8192
    time.sleep(0.3)
    assert server.tap.active is False  # the page closed: the tap stops copying


def test_websocket_refuses_a_foreign_origin(server):
    import aiohttp

    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        asyncio.run(_websocket(server, seconds=0.5, origin="http://evil.example"))
    assert caught.value.status == 403


def test_the_tap_never_waits_and_counts_what_it_drops():
    from spectro_fx.effect.io.ui import ViewTap

    tap = ViewTap(sr=SR, seconds=0.1)
    block = np.ones((SR, 2), np.float32)
    tap.push(block, block)
    assert tap.ring.readable() == 0 and tap.pushed == SR  # inactive: nothing copied
    tap.active = True
    # 1 s into a 0.1 s ring that nobody reads: a push that waited for a reader would never return
    pusher = threading.Thread(target=tap.push, args=(block, block), daemon=True)
    pusher.start()
    pusher.join(timeout=30)
    assert not pusher.is_alive()
    assert tap.ring.readable() == tap.ring.capacity
    assert tap.dropped == SR - tap.ring.capacity


@pytest.mark.parametrize(
    "spec, address",
    [("8765", ("127.0.0.1", 8765)), ("0.0.0.0:8000", ("0.0.0.0", 8000)), ("localhost:0", ("localhost", 0)),
     ("[::1]:9000", ("::1", 9000)), (":8001", ("127.0.0.1", 8001))],
)
def test_ui_address(spec, address):
    from spectro_fx.effect.io.ui import parse_ui_address

    assert parse_ui_address(spec) == address


@pytest.mark.parametrize("spec", ["", "http", "127.0.0.1:", "70000", "host:-1"])
def test_bad_ui_address_is_a_one_line_error(spec):
    from spectro_fx.effect.io.ui import parse_ui_address

    with pytest.raises(ParameterError, match=r"--ui .*PORT or HOST:PORT"):
        parse_ui_address(spec)


def test_a_taken_port_is_a_clear_error(server, engine, queue):
    from spectro_fx.effect.io.ui import ControlSurface, UIServer, ViewTap

    other = UIServer(ControlSurface(engine, put_many=queue.put_many, clock=lambda: 0.0), ViewTap(sr=SR), port=server.port)
    with pytest.raises(ParameterError, match=f"--ui 127.0.0.1:{server.port}: cannot listen there"):
        other.start()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--output", "OUT"], "--ui is for playing live (leave out --output)"),
        (["--ui", "localhost:http"], "--ui 'localhost:http': give PORT or HOST:PORT"),
    ],
)
def test_ui_command_line_errors_are_one_line(tmp_path, capsys, extra, message):
    import soundfile as sf

    from spectro_fx.effect.io.cli import main

    sf.write(tmp_path / "in.wav", np.zeros((4800, 1), np.float32), SR)
    argv = ["--input", str(tmp_path / "in.wav"), "--ui", "0"] + [a.replace("OUT", str(tmp_path / "o.wav")) for a in extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "o.wav").exists()
