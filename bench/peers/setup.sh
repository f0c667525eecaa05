#!/usr/bin/env bash
# Makes the virtualenv the PyTorch peers run in: bench/peers/.venv, with torch 2.9.0 from PyPI (the version
# burn-tch 0.21 / tch 0.22 also needs, so the same venv serves `--features tch`). ~3 GB with its CUDA libraries;
# a few minutes. Nothing in the README's two commands or the tests needs it.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet "torch==2.9.0" numpy
.venv/bin/python -c 'import torch; print("torch", torch.__version__, "threads", torch.get_num_threads())'
