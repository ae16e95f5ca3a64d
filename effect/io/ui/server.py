"""The local web server of ``--ui``: the page, a small JSON API and a WebSocket of live columns.

Runs an asyncio loop (aiohttp) on its own thread; the audio callback and the worker never wait on it.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import secrets
import socket
import threading
import time
from importlib import resources
from typing import Any

from spectro_fx.models.errors import ParameterError

from .control import ControlSurface
from .view import SpectrogramView, ViewTap

DEFAULT_HOST = "127.0.0.1"
MAX_UPDATES_PER_S = 30.0
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
CLIENT_QUEUE = 8  # messages a slow page may have pending before newer ones are dropped
SEND_BUFFER_BYTES = 32 * 1024  # kernel send buffer per page (Linux doubles it)
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token is in the URL: never hand it to another site
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'",
}


def parse_ui_address(spec: str) -> tuple[str, int]:
    """``--ui [HOST:]PORT`` -> ``(host, port)``; the host defaults to 127.0.0.1 (this machine
    only). Port 0 picks a free one (the start line prints the URL)."""
    text = str(spec).strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = DEFAULT_HOST, text
    host = host.strip("[]") or DEFAULT_HOST
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ParameterError(f"--ui {spec!r}: give PORT or HOST:PORT with a port in 0-65535 (e.g. --ui 8765)")
    return host, port


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class _Client:
    """One open page: a bounded queue drained by its own sender task, so one stalled page
    only loses its own updates."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=CLIENT_QUEUE)
        self.sent = 0
        self.dropped = 0
        self.task: asyncio.Task | None = None

    def offer(self, message: bytes | str) -> None:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1

    async def send_all(self) -> None:
        while True:
            message = await self.queue.get()
            if isinstance(message, bytes):
                await self.ws.send_bytes(message)
            else:
                await self.ws.send_str(message)
            self.sent += 1


class UIServer:
    """Serves the page of the live effect at ``http://HOST:PORT/?token=TOKEN``.

    Every HTTP and WebSocket request must carry the per-run token (``?token=``), else 403;
    requests whose ``Origin`` is another site, and, on a loopback address, whose ``Host`` is
    not this machine (DNS rebinding), are refused with 403 too.

    Parameters
    ----------
    surface : ControlSurface
        Parameters, state and the way changes go in.
    tap : ViewTap
        Blocks from the engine's worker for the spectrograms.
    host : str
        Address to listen on (127.0.0.1: this machine only; 0.0.0.0: the network).
    port : int
        Port (0: any free one; :attr:`port` tells which after :meth:`start`).
    token : str, optional
        The secret of the URL (default: 128 random bits, new each run).
    rate_hz : float
        WebSocket updates per second at most (<= 30).

    API (what the page itself uses)
    -------------------------------
    ``GET /api/state?token=T``: parameters (name, value, range, unit, kind, choices),
    the latest ``--stats-json`` record, the chain, the codemap grid, MIDI learn state.
    ``POST /api/params?token=T`` with ``{"name": value, ...}``: queued like MIDI knob moves;
    an unknown name or a bad value is a 400 naming it (nothing applied); out-of-range values
    are clamped and the reply says so. ``POST /api/learn?token=T`` with
    ``{"parameter": name}`` (or null) arms MIDI learn. ``GET /ws?token=T``: a WebSocket of
    binary spectrogram columns (:func:`~spectro_fx.effect.io.ui.view.unpack_columns`) and JSON
    text messages ``{"type": "state" | "values" | "stats", ...}``.
    """

    def __init__(
        self,
        surface: ControlSurface,
        tap: ViewTap,
        *,
        host: str = DEFAULT_HOST,
        port: int = 0,
        token: str | None = None,
        rate_hz: float = MAX_UPDATES_PER_S,
        view: SpectrogramView | None = None,
    ) -> None:
        if not 0 < rate_hz <= MAX_UPDATES_PER_S:
            raise ParameterError(f"rate_hz={rate_hz!r} must be in (0, {MAX_UPDATES_PER_S:g}] updates per second")
        self.surface = surface
        self.tap = tap
        self.view = view or SpectrogramView(sr=tap.sr)
        self.host = host
        self.port = int(port)
        self.token = token or secrets.token_urlsafe(16)
        self.period_s = 1.0 / rate_hz
        self.clients: set[_Client] = set()
        self.refused = 0
        self.updates = 0
        self._dropped_closed = 0  # updates dropped for pages since closed
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._static = {name: resources.files(__package__).joinpath("static", name).read_text() for name in STATIC_FILES}
        self._page = resources.files(__package__).joinpath("static", "index.html").read_text()

    # -- life cycle ------------------------------------------------------------------------------

    @property
    def dropped_messages(self) -> int:
        """Updates dropped for slow pages since the start (closed pages included)."""
        return self._dropped_closed + sum(c.dropped for c in list(self.clients))

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{_url_host(host)}:{self.port}/?token={self.token}"

    def start(self, timeout: float = 10.0) -> str:
        """Listen on its own thread; returns the page's URL. ParameterError when the address
        cannot be used (port taken, host not on this machine)."""
        self._thread = threading.Thread(target=self._run, name="spectro-fx-ui", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise ParameterError(f"--ui: the web server did not start within {timeout:g} s")
        if self.error is not None:
            raise ParameterError(f"--ui {self.host}:{self.port}: cannot listen there ({self.error})")
        return self.url

    def stop(self, timeout: float = 5.0) -> None:
        """Close every page and stop listening (what is left after ``timeout`` dies with the
        process: the thread is a daemon)."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop already ended
                pass
        if self._thread is not None:
            self._thread.join(timeout)
        self.tap.active = False

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported by start(); the audio goes on regardless
            self.error = exc
        finally:
            self._ready.set()
            self._loop.close()

    async def _serve(self) -> None:
        from aiohttp import web

        self._stop = asyncio.Event()
        app = web.Application(middlewares=[self._guard()], client_max_size=64 * 1024)
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._asset)
        app.router.add_get("/api/state", self._get_state)
        app.router.add_post("/api/params", self._post_params)
        app.router.add_post("/api/learn", self._post_learn)
        app.router.add_get("/ws", self._websocket)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
            try:
                await site.start()
            except OSError as exc:
                self.error = exc
                return
            if runner.addresses:  # the port chosen for port 0
                self.port = runner.addresses[0][1]
            self._ready.set()
            ticker = asyncio.ensure_future(self._tick())
            await self._stop.wait()
            ticker.cancel()
            for client in list(self.clients):
                if client.task is not None:
                    client.task.cancel()
                try:
                    await asyncio.wait_for(client.ws.close(), 0.5)
                except (asyncio.TimeoutError, Exception):
                    pass
        finally:
            await runner.cleanup()

    # -- security --------------------------------------------------------------------------------

    def _refusal(self, request: Any) -> str | None:
        """Why a request is refused (None: it may pass)."""
        given = request.query.get("token", "")
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return "this page needs the token printed by spectro-fx at start (?token=...)"
        if _loopback(self.host):
            host = request.host.rsplit(":", 1)[0].strip("[]") if request.host else ""
            if not _loopback(host):
                return f"Host {request.host!r} is not this machine"
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"http://{request.host}":
            return f"requests from {origin} are refused; open the page spectro-fx printed"
        return None

    def _guard(self):
        """The middleware that refuses what :meth:`_refusal` names and adds the security headers."""
        from aiohttp import web

        @web.middleware
        async def guard(request, handler):
            why = self._refusal(request)
            if why is not None:
                self.refused += 1
                return web.json_response({"error": why}, status=403, headers=SECURITY_HEADERS)
            response = await handler(request)
            if not getattr(response, "prepared", False):
                response.headers.update(SECURITY_HEADERS)
            return response

        return guard

    # -- HTTP ------------------------------------------------------------------------------------

    async def _index(self, request):
        from aiohttp import web

        page = self._page.replace("__TOKEN__", self.token)
        return web.Response(text=page, content_type="text/html")

    async def _asset(self, request):
        from aiohttp import web

        name = request.match_info["name"]
        if name not in STATIC_FILES:
            return web.json_response({"error": f"no file {name!r}"}, status=404)
        return web.Response(text=self._static[name], content_type=STATIC_FILES[name])

    def _state(self) -> dict:
        state = self.surface.state()
        state["view"] = self.view.describe()
        state["ui"] = {
            "clients": len(self.clients),
            "dropped_messages": self.dropped_messages,
            "tap_dropped_frames": self.tap.dropped,
            "refused": self.refused,
            "max_updates_per_s": round(1.0 / self.period_s, 2),
        }
        return state

    async def _get_state(self, request):
        from aiohttp import web

        return web.json_response(self._state(), dumps=_dumps)

    async def _json_body(self, request):
        from aiohttp import web

        try:
            return await request.json(loads=json.loads)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise web.HTTPBadRequest(
                text=json.dumps({"error": f"the body is not JSON ({exc})"}), content_type="application/json"
            ) from None

    async def _post_params(self, request):
        from aiohttp import web

        changes = await self._json_body(request)
        try:
            reply = self.surface.apply(changes)
        except ParameterError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(reply, dumps=_dumps)

    async def _post_learn(self, request):
        from aiohttp import web

        body = await self._json_body(request)
        if not isinstance(body, dict) or "parameter" not in body:
            return web.json_response({"error": 'the body must be {"parameter": NAME} (null cancels)'}, status=400)
        try:
            message = self.surface.learn(body["parameter"])
        except ParameterError as exc:
            status = 409 if "needs a MIDI input" in str(exc) else 400
            return web.json_response({"error": str(exc)}, status=status)
        return web.json_response({"message": message, "midi": self.surface.midi()}, dumps=_dumps)

    # -- WebSocket -------------------------------------------------------------------------------

    async def _websocket(self, request):
        from aiohttp import WSMsgType, web

        # no compression: on this machine's loopback the CPU matters more than the bytes
        ws = web.WebSocketResponse(max_msg_size=64 * 1024, heartbeat=None, compress=False,
                                   writer_limit=SEND_BUFFER_BYTES // 2)
        await ws.prepare(request)
        connection = request.transport.get_extra_info("socket") if request.transport else None
        if connection is not None:
            # a page that stops reading (a background tab, a frozen machine) should see fresh
            # columns when it wakes, not seconds of stale ones: keep the kernel's share small
            # (about 1 s of updates) so its own queue fills and drops instead
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        if request.transport is not None:  # and asyncio's own buffer in front of it
            request.transport.set_write_buffer_limits(high=SEND_BUFFER_BYTES // 2)
        client = _Client(ws)
        if not self.clients:
            self.view.skip_backlog(self.tap.ring)
        self.clients.add(client)
        self.tap.active = True
        client.offer(json.dumps({"type": "state", **self._state()}, default=_jsonable))
        client.task = asyncio.ensure_future(client.send_all())
        try:
            async for message in ws:  # the page sends nothing; this waits for it to close
                if message.type == WSMsgType.ERROR:
                    break
        finally:
            self.clients.discard(client)
            self._dropped_closed += client.dropped
            self.tap.active = bool(self.clients)
            client.task.cancel()
        return ws

    async def _tick(self) -> None:
        """Every ``period_s``: new columns to every page; values when they changed; stats
        when a new second's record came."""
        last_values: dict | None = None
        last_stats: dict | None = None
        next_at = time.monotonic()
        while True:
            next_at += self.period_s
            await asyncio.sleep(max(next_at - time.monotonic(), 0.0))
            if time.monotonic() - next_at > 1.0:  # fell far behind (a stalled machine): no burst
                next_at = time.monotonic()
            if not self.clients:
                continue
            try:
                messages = self._updates(last_values, last_stats)
            except Exception as exc:  # a drawing error must not end the updates
                self.error = exc
                continue
            for message, values, stats in messages:
                last_values = values if values is not None else last_values
                last_stats = stats if stats is not None else last_stats
                for client in list(self.clients):
                    client.offer(message)
            self.updates += 1

    def _updates(self, last_values, last_stats):
        out = []
        first = self.view.columns_done
        columns_in, columns_out = self.view.columns(self.tap.ring)
        if columns_in.shape[0]:
            out.append((self.view.pack(columns_in, columns_out, first_column=first), None, None))
        values = self.surface.values()
        stats = self.surface.stats()
        text: dict[str, Any] = {}
        if values != last_values:
            text["values"] = values
            text["midi"] = self.surface.midi()
        if stats is not None and stats is not last_stats:
            text["stats"] = stats
        if text:
            text["type"] = "update"
            out.append((json.dumps(text, default=_jsonable), values, stats))
        return out


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_jsonable)
