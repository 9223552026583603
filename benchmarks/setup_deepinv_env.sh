#!/usr/bin/env bash
# Create a separate virtual environment for the deepinv peers of benchmarks/ct_operators.py and
# benchmarks/methods.py (which runs benchmarks/deepinv_peer.py with it and skips deepinv, with a note, without it).
#
# deepinv needs torchvision to import, and torchvision from the registry does not import beside
# the CPU torch 2.13.0 of medrecon's .venv (see shared ENVIRONMENT.md). torch==2.14.1 and
# torchvision==0.29.1 install from the local cache as a matched pair (about 6 GB), so deepinv
# gets its own venv. Not called by the Makefile (large); run it once by hand, e.g. in the background:
#     nice bash benchmarks/setup_deepinv_env.sh       # creates .venv-deepinv in the repo root (~6 GB)
#     VENV=/some/where bash benchmarks/setup_deepinv_env.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv-deepinv}"
PYTHON="${PYTHON:-python3}"
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
# torch and torchvision on the same pip line as deepinv, so pip cannot pick another torch.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    "torch==2.14.1" "torchvision==0.29.1" "deepinv==0.5.0"
"$VENV/bin/python" -c "import torch, torchvision, deepinv; print('deepinv', deepinv.__version__, 'torch', torch.__version__, 'torchvision', torchvision.__version__)"
