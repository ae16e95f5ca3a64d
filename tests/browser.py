"""The `--ui` page's clients for the UI tests and benchmarks: Debian's chromium under selenium, and a frozen tab.

Both talk to a running `spectro-fx --ui` at the URL it prints (``http://HOST:PORT/?token=...``).
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
from pathlib import Path

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,820",
)


def chromium(profile: Path):
    """Debian's chromium under selenium, through Debian's chromedriver (no download); a fresh
    profile in ``profile``. RuntimeError when either is not installed."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        raise RuntimeError("chromium and chromedriver are not installed: run `make system` (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def frozen_page(url: str) -> socket.socket:
    """Open the page's WebSocket and never read from it again (a frozen tab), with a tiny
    receive buffer so it fills at once. RuntimeError when the server refuses the upgrade."""
    host_port, token = url.split("//", 1)[1].split("/?token=")
    host, port = host_port.rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws?token={token} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://{host_port}\r\n\r\n".encode()
    )
    status = sock.recv(12)
    if b"101" not in status:
        sock.close()
        raise RuntimeError(f"the server refused the WebSocket upgrade: {status!r}")
    return sock
