"""Where energy is read: NVIDIA GPUs through NVML (energy counter, else power), the CPU package
and DRAM through Linux RAPL, and a TDP estimate, labelled as one, when asked for.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

from .units import milliwatts_to_watts

class Reading(NamedTuple):
    power_w: float | None
    counter: float | None


class Source:
    """One device the sampler reads: a power reading and/or a raw cumulative counter."""

    name: str
    kind: str
    description: str
    status = "measured"
    method = "power"
    counter_unit_j = 1.0
    wrap_at: float | None = None
    derive_power = False  # power shown for a counter-only source is its mean since the previous sample

    def read(self) -> Reading:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class _NvmlGpu(Source):
    kind = "gpu"
    counter_unit_j = 1e-3  # mJ

    def __init__(self, pynvml, handle, index: int, name: str, *, use_counter: bool, use_power: bool):
        self._nvml = pynvml
        self._handle = handle
        self._use_counter = use_counter
        self._use_power = use_power
        self.name = f"gpu{index}"
        self.method = "counter" if use_counter else "power"
        source = "NVML total-energy counter (mJ)" if use_counter else "NVML power (mW), no energy counter on this GPU"
        self.description = f"{name} (NVML index {index}; {source})"

    def read(self) -> Reading:
        power = counter = None
        errors = []
        if self._use_power:
            try:
                power = milliwatts_to_watts(float(self._nvml.nvmlDeviceGetPowerUsage(self._handle)))
            except self._nvml.NVMLError as exc:
                errors.append(exc)
        if self._use_counter:
            try:
                counter = float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
            except self._nvml.NVMLError as exc:
                errors.append(exc)
        if errors and power is None and counter is None:
            raise ReadError(str(errors[0]))
        return Reading(power, counter)

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError:
            pass


class _RaplZone(Source):
    method = "counter"
    counter_unit_j = 1e-6  # uJ
    derive_power = True

    def __init__(self, zone: Path, *, name: str, kind: str, label: str, wrap_at: float):
        self._energy_file = zone / "energy_uj"
        self.name = name
        self.kind = kind
        self.wrap_at = wrap_at
        self.description = f"{label} (RAPL {zone.name}, energy_uj counter wrapping at {wrap_at:.0f} uJ)"

    def read(self) -> Reading:
        try:
            return Reading(None, float(self._energy_file.read_text().strip()))
        except (OSError, ValueError) as exc:
            raise ReadError(f"{self._energy_file}: {exc}") from exc


class TdpEstimate(Source):
    kind = "cpu"
    status = "estimate"
    method = "power"

    def __init__(self, tdp_w: float):
        self._tdp_w = float(tdp_w)
        self.name = "cpu-tdp-estimate"
        self.description = f"CPU assumed at the configured TDP of {tdp_w:g} W (an ESTIMATE, not a measurement)"

    def read(self) -> Reading:
        return Reading(self._tdp_w, None)


class ReadError(Exception):
    """A device reading failed this time; the sample is skipped for that device."""


def _visible_gpu_entries(value: str | None, count: int) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as a list of entries (indices or UUID prefixes), None when unset.

    CUDA stops at the first invalid entry (e.g. ``-1``), so do we.
    """
    if value is None:
        return None
    entries = []
    for item in value.split(","):
        item = item.strip()
        if re.fullmatch(r"\d+", item):
            if int(item) >= count:
                break
            entries.append(item)
        elif item.startswith(("GPU-", "MIG-")):
            entries.append(item)
        else:
            break
    return entries


def discover_nvml() -> tuple[list[Source], list[dict], list[str]]:
    """NVML sources for every visible GPU, the GPUs that cannot be read, and notes."""
    try:
        import pynvml
    except ImportError:
        return [], [{"name": "gpu", "kind": "gpu", "reason": "the pynvml module (package nvidia-ml-py) is not installed"}], []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return [], [{
            "name": "gpu",
            "kind": "gpu",
            "reason": f"NVML is not available ({exc}): no NVIDIA GPU or driver on this machine",
        }], []
    try:
        sources, missing, notes = _nvml_sources(pynvml)
    except pynvml.NVMLError as exc:
        return [], [{"name": "gpu", "kind": "gpu", "reason": f"NVML failed while listing GPUs ({exc})"}], []
    finally:
        pynvml.nvmlShutdown()
    return sources, missing, notes


def _nvml_sources(pynvml) -> tuple[list[Source], list[dict], list[str]]:
    sources: list[Source] = []
    missing: list[dict] = []
    notes: list[str] = []
    try:
        count = pynvml.nvmlDeviceGetCount()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        uuids = [_text(pynvml.nvmlDeviceGetUUID(h)) for h in handles]
        entries = _visible_gpu_entries(os.environ.get("CUDA_VISIBLE_DEVICES"), count)
        if entries is None:
            chosen = list(range(count))
        else:
            chosen = []
            for entry in entries:
                if entry.isdigit():
                    chosen.append(int(entry))
                    continue
                if entry.startswith("MIG-"):
                    missing.append({"name": entry, "kind": "gpu", "reason": "a MIG instance has no power reading of its own"})
                    continue
                hits = [i for i, u in enumerate(uuids) if u.startswith(entry)]
                if len(hits) == 1:
                    chosen.append(hits[0])
                else:
                    missing.append({"name": entry, "kind": "gpu", "reason": f"CUDA_VISIBLE_DEVICES entry {entry!r} matches {len(hits)} GPUs"})
            if any(e.isdigit() for e in entries) and os.environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
                notes.append(
                    "CUDA_VISIBLE_DEVICES indices were taken as NVML (PCI bus) indices; set CUDA_DEVICE_ORDER=PCI_BUS_ID "
                    "so CUDA numbers GPUs the same way"
                )
        if count == 0 or (entries is not None and not chosen and not missing):
            missing.append({"name": "gpu", "kind": "gpu", "reason": "NVML runs but no GPU is visible to this process"})
        for i in dict.fromkeys(chosen):
            handle = handles[i]
            name = _text(pynvml.nvmlDeviceGetName(handle))
            power_ok = counter_ok = True
            errors = []
            try:
                pynvml.nvmlDeviceGetPowerUsage(handle)
            except pynvml.NVMLError as exc:
                power_ok = False
                errors.append(f"power: {exc}")
            try:
                pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            except pynvml.NVMLError as exc:
                counter_ok = False
                errors.append(f"energy counter: {exc}")
            if not (power_ok or counter_ok):
                missing.append({"name": f"gpu{i}", "kind": "gpu", "reason": f"{name}: NVML cannot read it ({'; '.join(errors)})"})
                continue
            # each source holds one NVML reference so closing them all balances nvmlInit
            pynvml.nvmlInit()
            sources.append(_NvmlGpu(pynvml, handle, i, name, use_counter=counter_ok, use_power=power_ok))
    except pynvml.NVMLError:
        for source in sources:
            source.close()
        raise
    return sources, missing, notes


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def discover_rapl(root: Path) -> tuple[list[Source], list[dict]]:
    """RAPL package and DRAM zones under ``root`` (``/sys/class/powercap``) that can be read.

    Core/uncore sub-zones are parts of the package and ``psys`` covers the whole platform, so
    they are left out to avoid counting energy twice.
    """
    def not_measured(reason_cpu: str, reason_dram: str | None = None) -> list[dict]:
        return [
            {"name": "cpu-package", "kind": "cpu", "reason": reason_cpu},
            {"name": "dram", "kind": "dram", "reason": reason_dram or reason_cpu},
        ]

    if not root.is_dir():
        return [], not_measured(f"{root} does not exist: no RAPL powercap interface (usual in VMs)")
    zones = sorted(p for p in root.glob("intel-rapl:*") if re.fullmatch(r"intel-rapl(:\d+)+", p.name))
    if not zones:
        return [], not_measured(f"no intel-rapl zone under {root}")
    sources: list[Source] = []
    problems: dict[str, list[str]] = {"cpu": [], "dram": []}
    for zone in zones:
        try:
            zone_name = (zone / "name").read_text().strip()
        except OSError as exc:
            problems["cpu"].append(f"{zone}/name: {exc}")
            continue
        top_level = zone.name.count(":") == 1
        if top_level and zone_name.startswith("package-"):
            kind, name, label = "cpu", f"cpu-{zone_name.replace('-', '')}", f"CPU {zone_name}"
        elif zone_name == "dram":
            parent = zone.name.split(":")[1]
            kind, name, label = "dram", f"dram{parent}", f"DRAM of package-{parent}"
        else:
            continue
        try:
            wrap_at = float((zone / "max_energy_range_uj").read_text().strip())
            float((zone / "energy_uj").read_text().strip())
        except PermissionError:
            problems[kind].append(
                f"{zone / 'energy_uj'} is not readable by this user (root-only on current kernels)"
            )
            continue
        except (OSError, ValueError) as exc:
            problems[kind].append(f"{zone}: {exc}")
            continue
        sources.append(_RaplZone(zone, name=name, kind=kind, label=label, wrap_at=wrap_at))
    missing = []
    for kind, label in (("cpu", "cpu-package"), ("dram", "dram")):
        if not any(s.kind == kind for s in sources):
            reason = "; ".join(problems[kind]) or f"no RAPL {'package' if kind == 'cpu' else 'dram'} zone under {root}"
            missing.append({"name": label, "kind": kind, "reason": reason})
    return sources, missing
