#!/usr/bin/env bash
# Wheels that let tests/bench/gpu_energy_check.py compare against codecarbon on a lent GPU machine,
# which cannot fetch packages (Python 3.12 there; torch, nvidia-ml-py, pandas, psutil, py-cpuinfo,
# prometheus-client, requests, rich, typer, click are already installed). Downloads into .whl/
# (git-ignored through .git/info/exclude), about 21 MB. Then, on the device:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
#     && export PYTHONPATH=/tmp/site && python3 tests/bench/gpu_energy_check.py --seconds 60 --out "$OUT/energy"
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
platforms=(manylinux_2_34_x86_64 manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64
           manylinux2014_x86_64 manylinux1_x86_64 any)
args=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none -d .whl)
for p in "${platforms[@]}"; do args+=(--platform "$p"); done
# codecarbon 3.3.2 and what it needs that the device image lacks (checked against its package list)
python3 -m pip download -q "${args[@]}" \
    codecarbon==3.3.2 annotated-types==0.8.0 arrow==1.4.0 authlib==1.9.10 cffi==2.1.1 cryptography==50.0.2 \
    joserfc==1.8.0 prompt-toolkit==3.0.53 pycountry==26.2.16 pycparser==3.12 pydantic==2.14.4 pydantic-core==2.50.5 \
    questionary==2.1.1 rapidfuzz==3.14.6 types-python-dateutil==2.9.0.20261116 typing-extensions==4.16.0 \
    typing-inspection==0.4.5 tzdata==2026.6 wcwidth==0.9.4
du -sh .whl
