"""Does an open `--ui` page cost the audio anything? Underruns and engine load of `spectro-fx`
live on a JACK dummy server (48 kHz, 256 frames) without a page, with a chromium page, with a frozen one.

Prints figures; asserts nothing. Runs alternate (none, page, frozen, none, ...) so the shared
machine's drift falls on every condition alike. Usage:
  python tests/bench/bench_ui.py [--seconds 60] [--rounds 3] [--screenshot page.png]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench_live import stats_lines, wait_for  # noqa: E402

from tests.browser import chromium, frozen_page  # noqa: E402
from tests.jack import JackServer  # noqa: E402

CONDITIONS = ("no page", "chromium page", "frozen page")


class Run:
    def __init__(self, server: JackServer, args: list[str]) -> None:
        cmd = [sys.executable, "-m", "spectro_fx.effect.io.cli", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=server.env)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True).start()

    def url(self) -> str:
        def find():
            return next((l.split(": ", 1)[1].strip() for l in list(self.lines) if l.startswith("browser UI: ")), None)

        return wait_for(find, timeout=60, what="the browser UI line", proc=self.proc)


def one_run(server: JackServer, condition: str, *, seconds: float, work: Path, model: str | None,
            screenshot: Path | None = None, extra: list[str] = ()) -> dict:
    from spectro_fx.assets import DEMO_CLIP, asset_path

    stats = work / f"stats-{time.monotonic_ns()}.jsonl"
    args = ["--input", str(asset_path(DEMO_CLIP)), "--loop", "--duration", str(seconds), "--stats-json", str(stats),
            "--no-status", "--jack-name", "bench-ui", *extra]
    if model:
        args += ["--model", model]
    if condition != "no page":
        args += ["--ui", "127.0.0.1:0"]
    run = Run(server, args)
    driver = sock = None
    browser_cpu = 0.0
    try:
        if condition == "chromium page":
            url = run.url()
            driver = chromium(work / f"profile-{time.monotonic_ns()}")
            driver.get(url)
            wait_for(lambda: driver.execute_script("return window.spectroFx.columnsReceived") > 100, timeout=30,
                     what="columns on the page", proc=run.proc)
            if screenshot is not None:
                time.sleep(6.0)  # a full screen of columns
                driver.save_screenshot(str(screenshot))
        elif condition == "frozen page":
            sock = frozen_page(run.url())
        run.proc.wait(timeout=seconds + 120)
        if driver is not None:
            browser_cpu = chromium_cpu_s(driver)
    finally:
        if driver is not None:
            driver.quit()
        if sock is not None:
            sock.close()
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGINT)
            run.proc.wait(timeout=30)
    lines = stats_lines(stats)
    if not lines:
        raise SystemExit(f"{condition}: no stats: {''.join(run.lines)[-2000:]}")
    last = lines[-1]
    body = lines[2:]  # the first seconds hold start-up
    p50 = [l["engine_load_p50"] for l in body if l["engine_load_p50"] is not None]
    p99 = [l["engine_load_p99"] for l in body if l["engine_load_p99"] is not None]
    cpu = [l["cpu_s_per_audio_s"] for l in body if l["cpu_s_per_audio_s"] is not None]
    return {
        "condition": condition,
        "audio_s": last["stream_s"],
        "underruns": last["underruns"],
        "dry_share": last["underrun_frames"] / max(last["frames"], 1),
        "xruns": last["xruns"],
        "load_p50": float(np.median(p50)) if p50 else float("nan"),
        "load_p99": float(np.median(p99)) if p99 else float("nan"),
        "cpu_s_per_audio_s": float(np.median(cpu)) if cpu else float("nan"),
        "dropped_messages": (last.get("ui") or {}).get("dropped_messages", 0),
        "browser_cpu_s_per_audio_s": browser_cpu / max(last["stream_s"], 1e-9),
    }


def chromium_cpu_s(driver) -> float:
    """CPU seconds chromium's processes used so far (user + system, from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[str, list[str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(fields[1], []).append(stat.parent.name)
    pids, todo = set(), [str(driver.service.process.pid)]
    while todo:  # every descendant of chromedriver: the browser, its zygotes, renderers, GPU process
        for child in parents.get(todo.pop(), []):
            pids.add(child)
            todo.append(child)
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="audio per run (default 60)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each condition (default 3)")
    parser.add_argument("--model", help="model file (default: the bundled default model)")
    parser.add_argument("--screenshot", type=Path, help="also save a screenshot of the page (the picture in docs/ui.md)")
    args = parser.parse_args()
    if shutil.which("chromium") is None or shutil.which("chromedriver") is None:
        raise SystemExit("needs chromium and chromedriver: make system")
    work = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    server = JackServer(f"bench-ui-{os.getpid()}")
    os.environ["JACK_DEFAULT_SERVER"] = server.name  # for the rtmidi clients of this process
    results = []
    try:
        if args.screenshot is not None:
            one_run(server, "chromium page", seconds=14, work=work, model=args.model, screenshot=args.screenshot,
                    extra=["--chain", "inpaint", "--set", "low_hz=400", "--set", "high_hz=3000",
                           "--set", "period_s=2", "--set", "duty=0.6"])
            print(f"screenshot: {args.screenshot}")
        for k in range(args.rounds):
            for condition in CONDITIONS:
                result = one_run(server, condition, seconds=args.seconds, work=work, model=args.model)
                results.append(result)
                print(f"round {k + 1} {condition:14s} underruns {result['underruns']:4d} ({100 * result['dry_share']:.2f} % dry) "
                      f"xruns {result['xruns']:4d} load p50 {result['load_p50']:.3f} p99 {result['load_p99']:.3f} "
                      f"cpu {result['cpu_s_per_audio_s']:.3f} s/s dropped {result['dropped_messages']} "
                      f"chromium {result['browser_cpu_s_per_audio_s']:.2f} s/s", flush=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    import torch

    print(f"\nmachine: {platform.machine()} {os.cpu_count()} cores, {platform.platform()}, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}; {args.rounds} x {args.seconds:g} s per condition, demo clip looped, "
          "chain none, 48 kHz / 256 frames")
    print(f"{'condition':15s} {'underruns':>10s} {'dry %':>7s} {'xruns':>6s} {'load p50':>9s} {'load p99':>9s} "
          f"{'cpu s/s':>8s} {'chromium s/s':>13s}")
    for condition in CONDITIONS:
        rows = [r for r in results if r["condition"] == condition]
        if not rows:
            continue
        total = sum(r["underruns"] for r in rows)
        dry = 100 * float(np.mean([r["dry_share"] for r in rows]))
        xruns = sum(r["xruns"] for r in rows)
        med = lambda key: float(np.median([r[key] for r in rows]))
        print(f"{condition:15s} {total:10d} {dry:7.2f} {xruns:6d} {med('load_p50'):9.3f} {med('load_p99'):9.3f} "
              f"{med('cpu_s_per_audio_s'):8.3f} {med('browser_cpu_s_per_audio_s'):13.2f}")


if __name__ == "__main__":
    main()
