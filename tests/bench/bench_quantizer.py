"""Nearest-code search speed on one CPU core: ``nearest_code`` against the whole-distance formula
it replaced (``|z|^2 - 2 z.e + |e|^2`` then ``argmin``), measured in the same run, for the blocks
the engine searches (33 codemap rows x 1 column live, x 85 columns per 16,384-sample offline block).

Run: .venv/bin/python tests/bench/bench_quantizer.py [--model FILE] [--repeats 50]
Prints figures and whether the two give the same codes; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch


def whole_formula(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """The search as it was before 2026-12 (the baseline)."""
    dist_sq = z.pow(2).sum(1, keepdim=True) - 2.0 * z @ codebook.t() + codebook.pow(2).sum(1).unsqueeze(0)
    return dist_sq.argmin(dim=1)


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    times.sort()
    return 1000 * times[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model file whose codebook to search (default: the bundled default)")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from spectro_fx.assets import DEFAULT_MODEL, asset_path
    from spectro_fx.models.export import load_model
    from spectro_fx.models.quantizer import nearest_code

    model = load_model(args.model or asset_path(DEFAULT_MODEL))
    codebook = model.module.codebook.detach().float().contiguous()
    k, d = codebook.shape
    rows = int(model.module.n_rows)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f}, torch {torch.__version__}, 1 thread")
    print(f"codebook: K={k}, D={d} ({model.path.name}); {rows} rows per column")
    gen = torch.Generator().manual_seed(0)
    squared = codebook.pow(2).sum(1)
    for columns in (1, 8, 85):
        n = rows * columns
        # latents near codes, as an encoder's are, plus noise
        z = codebook[torch.randint(0, k, (n,), generator=gen)] + 0.3 * codebook.std() * torch.randn(n, d, generator=gen)
        base = _median_ms(lambda: whole_formula(z, codebook), args.repeats)
        new = _median_ms(lambda: nearest_code(z, codebook), args.repeats)
        kept = _median_ms(lambda: nearest_code(z, codebook, squared), args.repeats)
        same = bool(torch.equal(whole_formula(z, codebook), nearest_code(z, codebook)))
        print(f"  {columns:3d} column(s), {n:5d} latents: whole formula {base:.3f} ms (baseline), nearest_code "
              f"{new:.3f} ms ({base / new:.1f}x), with the norms kept {kept:.3f} ms ({base / kept:.1f}x); same codes: {same}")


if __name__ == "__main__":
    main()
