"""GPU energy check: a short VQ-VAE training on the GPU inside `EnergyTracker`, compared on the same
interval with NVML's energy counter read directly and with codecarbon's GPU energy (if importable).

Run it where a GPU is lent, from the repository root (prints the figures; exit 0 when the run
worked, whatever the figures say; 2 when there is no GPU or no NVML)::

    python tests/bench/gpu_energy_check.py --seconds 60 --out "$OUT/energy"

On a bare GPU box without an install of this project the script imports the package from the
checkout itself; ``nvidia-ml-py`` is pure Python, so if ``pynvml`` is missing there the script
loads ``pynvml.py`` from this checkout's ``.venv`` (carry ``.venv/lib/python3.11/site-packages/pynvml.py``).
codecarbon is not installed on the lent GPU machines and they cannot fetch it: run
``tests/bench/gpu_energy_wheels.sh`` here first (19 wheels, 21 MB, into ``.whl/``), carry ``.whl`` and
start the device command with ``python3 -m pip install -q --no-index --no-deps --no-compile
--no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site &&``
(the set was checked complete in a Python 3.12 venv holding only the device image's packages).
``--tdp-estimate-w W`` gives both trackers the same CPU watts where RAPL is unreadable; ours then
counts W for the whole interval, codecarbon 3.3.2 scales W by the CPU load it reads through psutil
(20 s dry run on this 2-core VM at W=50: 1014 J against 224 J), so the two CPU figures differ by
design; the GPU figures are the comparison that counts.
``--allow-cpu`` makes a dry run on the CPU (the tracker then reports the GPU as not measured).

What is compared (all kWh of GPU energy over the tracker's interval):
- the tracker's figure (NVML total-energy counter differenced, or power integrated if the GPU
  has no counter) and its own 1-s power integral (trapezoid) as a cross-check;
- NVML's counter read directly just before `start()` and just after `stop()` (a few ms wider);
- codecarbon's ``final_emissions_data.gpu_energy`` (its tracker starts just before ours and stops
  just after; its ``energy_consumed`` adds CPU and RAM, which it estimates where RAPL is absent).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _import_project():
    """`spectro_fx.training.energy` and `spectro_fx.models`, installed or straight from the checkout."""
    try:
        import spectro_fx.training.energy  # noqa: F401
    except ImportError:
        for name, folder in (("spectro_fx", "spectro_fx"), ("spectro_fx.models", "models"),
                             ("spectro_fx.training", "training")):
            spec = importlib.util.spec_from_file_location(
                name, REPO / folder / "__init__.py", submodule_search_locations=[str(REPO / folder)]
            )
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
    from spectro_fx.models.config import VQVAEConfig
    from spectro_fx.models.vqvae import VQVAE
    from spectro_fx.training import energy

    return energy, VQVAE, VQVAEConfig


def _import_pynvml():
    try:
        import pynvml
        return pynvml
    except ImportError:
        pass
    # only the one pure-Python file, so nothing else from the venv shadows this machine's packages
    for candidate in sorted(REPO.glob(".venv/lib/python3*/site-packages/pynvml.py")):
        folder = tempfile.mkdtemp(prefix="pynvml-")
        shutil.copy(candidate, folder)
        sys.path.append(folder)
        import pynvml
        return pynvml
    return None


def _nvml_counters_mj(pynvml) -> dict[int, float]:
    """NVML total-energy counter (mJ) of every GPU that has one, by NVML index."""
    out = {}
    for i in range(pynvml.nvmlDeviceGetCount()):
        try:
            out[i] = float(pynvml.nvmlDeviceGetTotalEnergyConsumption(pynvml.nvmlDeviceGetHandleByIndex(i)))
        except pynvml.NVMLError:
            pass
    return out


def _start_codecarbon(interval_s: float, out_dir: Path, cpu_power_w: float | None):
    try:
        from codecarbon import OfflineEmissionsTracker
    except ImportError as exc:
        return None, f"codecarbon not importable ({exc})"
    kwargs = dict(
        country_iso_code="USA", measure_power_secs=interval_s, save_to_file=False,
        log_level="error", tracking_mode="machine", output_dir=str(out_dir),
    )
    if cpu_power_w is not None:
        kwargs["force_cpu_power"] = cpu_power_w
    try:
        tracker = OfflineEmissionsTracker(**kwargs)
    except TypeError:  # older codecarbon without some keyword: keep the essential ones
        tracker = OfflineEmissionsTracker(country_iso_code="USA", measure_power_secs=interval_s)
    tracker.start()
    return tracker, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="training time inside the tracker (default 60)")
    parser.add_argument("--interval", type=float, default=1.0, help="sampling interval of both trackers, s")
    parser.add_argument("--batch", type=int, default=30, help="examples per batch (paper: 30)")
    parser.add_argument("--frames", type=int, default=248, help="STFT frames per example (paper: 248)")
    parser.add_argument("--epochs", type=int, default=3, help="epoch marks over the run (per-epoch report)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the tracker's files and results.json")
    parser.add_argument("--allow-cpu", action="store_true", help="dry run on the CPU when there is no GPU")
    parser.add_argument("--tdp-estimate-w", type=float, default=None, metavar="WATTS",
                        help="CPU watts both trackers assume where RAPL is unreadable (ours: tdp_estimate_w, "
                             "codecarbon: force_cpu_power), so their CPU figures can be compared too")
    args = parser.parse_args(argv)

    import torch

    energy, VQVAE, VQVAEConfig = _import_project()
    pynvml = _import_pynvml()
    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print("no CUDA GPU visible to torch: nothing to check (use --allow-cpu for a dry run)")
        return 2
    if cuda and pynvml is None:
        print("a GPU is visible but the pynvml module (nvidia-ml-py) is not importable: cannot read NVML")
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    out = args.out or Path(tempfile.mkdtemp(prefix="gpu-energy-"))
    out.mkdir(parents=True, exist_ok=True)

    cfg = VQVAEConfig()
    model = VQVAE(cfg).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    frames = max(cfg.time_stride, args.frames // cfg.time_stride * cfg.time_stride)
    n_bins = cfg.stft.n_fft // 2 + 1
    batch = args.batch if cuda else min(args.batch, 4)
    gen = torch.Generator(device="cpu").manual_seed(0)
    # a pool of log-normal "magnitudes" resident on the device, so the loop measures the GPU, not I/O
    pool = torch.exp(torch.randn(8, batch, n_bins, frames, generator=gen) * 1.5 - 4.0).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)

    def train_step(i: int) -> None:
        out_ = model(pool[i % pool.shape[0]])
        loss = torch.mean((out_.reconstruction - out_.target) ** 2) + out_.commitment_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(5):  # warm-up (cuDNN autotuning, allocator) outside the measured interval
        train_step(i)
    if cuda:
        torch.cuda.synchronize()

    cc, cc_problem = _start_codecarbon(args.interval, out, args.tdp_estimate_w)
    t_cc_start = time.monotonic()
    if pynvml is not None and cuda:
        pynvml.nvmlInit()
        before = _nvml_counters_mj(pynvml)
    t0 = time.monotonic()
    steps = 0
    with energy.EnergyTracker(out, interval_s=args.interval, tdp_estimate_w=args.tdp_estimate_w) as tracker:
        t_start = time.monotonic()
        epoch_len = args.seconds / max(1, args.epochs)
        for epoch in range(max(1, args.epochs)):
            tracker.mark_epoch(epoch)
            while time.monotonic() - t_start < (epoch + 1) * epoch_len:
                train_step(steps)
                steps += 1
                tracker.mark_step(steps)
                if cuda and steps % 20 == 0:
                    torch.cuda.synchronize()  # keep the queue short so epochs end on time
        if cuda:
            torch.cuda.synchronize()
    t1 = time.monotonic()
    direct_kwh = None
    if pynvml is not None and cuda:
        after = _nvml_counters_mj(pynvml)
        pynvml.nvmlShutdown()
    cc_result, cc_stop = None, None
    if cc is not None:
        cc.stop()
        cc_stop = time.monotonic()
        data = cc.final_emissions_data
        cc_result = {
            "gpu_energy_kwh": float(data.gpu_energy),
            "cpu_energy_kwh": float(data.cpu_energy),
            "ram_energy_kwh": float(data.ram_energy),
            "energy_consumed_kwh": float(data.energy_consumed),
            "duration_s": float(data.duration),
            "version": getattr(data, "codecarbon_version", None),
            "cpu_mode": str(getattr(data, "tracking_mode", "")) + "/" + str(getattr(cc, "_conf", {}).get("cpu_model", "")),
        }

    rep = tracker.report
    gpus = [c for c in rep["components"] if c["kind"] == "gpu"]
    tracked_idx = [int(c["name"][3:]) for c in gpus]
    if pynvml is not None and cuda and tracked_idx and all(i in before and i in after for i in tracked_idx):
        direct_kwh = sum(energy.millijoules_to_kwh(after[i] - before[i]) for i in tracked_idx)
    ours = sum(c["energy_kwh"] for c in gpus) if gpus and all(c["energy_kwh"] is not None for c in gpus) else None
    ours_power = (
        sum(c["power_integral_kwh"] for c in gpus)
        if gpus and all(c.get("power_integral_kwh") is not None for c in gpus) else None
    )

    def rel(x):
        return "" if x is None or not ours else f"  ({100 * (x - ours) / ours:+.2f} % vs tracker)"

    def kwh(x):
        return "n/a" if x is None else f"{x:.6f} kWh ({x * 3.6e6:.0f} J)"

    print(f"device: {torch.cuda.get_device_name(0) if cuda else 'CPU (dry run)'}; torch {torch.__version__}")
    print(f"model: VQ-VAE, {n_params} parameters; batch {batch} x {n_bins} bins x {frames} frames")
    print(f"training: {steps} steps in {t1 - t0:.1f} s, {steps * batch / (t1 - t0):.0f} examples/s")
    print(f"tracker interval: {rep['duration_s']:.2f} s, {rep['samples']} samples, largest gap {rep['max_gap_s']:.2f} s")
    for c in gpus:
        print(f"  {c['name']}: {c['description']}; mean {c['mean_power_w']:.1f} W, peak {c['peak_power_w']:.1f} W")
    for m in rep["not_measured"]:
        print(f"  {m['name']}: not measured: {m['reason']}")
    print(f"GPU energy, tracker (counter where supported): {kwh(ours)}")
    print(f"GPU energy, tracker power integral (trapezoid): {kwh(ours_power)}{rel(ours_power)}")
    print(f"GPU energy, NVML counter read directly:         {kwh(direct_kwh)}{rel(direct_kwh)}")
    if cc_result is not None:
        print(f"GPU energy, codecarbon {cc_result['version']}:            "
              f"{kwh(cc_result['gpu_energy_kwh'])}{rel(cc_result['gpu_energy_kwh'])}")
        print(f"  codecarbon interval {cc_result['duration_s']:.2f} s (starts {t0 - t_cc_start:.3f} s before ours, "
              f"stops {cc_stop - t1:.3f} s after); its total incl. CPU/RAM {kwh(cc_result['energy_consumed_kwh'])}")
    else:
        print(f"GPU energy, codecarbon: n/a, {cc_problem}")
    cpu = [c for c in rep["components"] if c["kind"] != "gpu"]
    ours_cpu = sum(c["energy_kwh"] for c in cpu) if cpu and all(c["energy_kwh"] is not None for c in cpu) else None
    if cpu:
        label = ", ".join(c["name"] for c in cpu)
        print(f"CPU energy, tracker ({label}):  {kwh(ours_cpu)}")
    if cc_result is not None:
        print(f"CPU energy, codecarbon ({cc_result['cpu_mode']}):  {kwh(cc_result['cpu_energy_kwh'])}"
              + ("" if not ours_cpu else f"  ({100 * (cc_result['cpu_energy_kwh'] - ours_cpu) / ours_cpu:+.2f} %)"))
    total = rep["total"]
    print(f"tracker total: {kwh(total['energy_kwh'])}; CO2e {total['co2e_kg']} kg ({total['formula']})")
    results = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "steps": steps,
        "seconds": t1 - t0,
        "examples_per_s": steps * batch / (t1 - t0),
        "tracker_gpu_kwh": ours,
        "tracker_gpu_power_integral_kwh": ours_power,
        "nvml_direct_gpu_kwh": direct_kwh,
        "tracker_cpu_kwh": ours_cpu,
        "tdp_estimate_w": args.tdp_estimate_w,
        "codecarbon": cc_result,
        "codecarbon_problem": cc_problem,
        "report": str(out / energy.REPORT_NAME),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"files: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
