#!/usr/bin/env bash
# Runs a cargo command with the LibTorch backend (burn-tch 0.21 → tch 0.22 → exactly torch==2.9.0) compiled in:
#
#   scripts/tch.sh xtask bench lm --backend tch     # `cargo xtask …` with `--features tch`
#   scripts/tch.sh test                             # the numeric suite on LibTorch (TestBackend = LibTorch, CPU)
#   scripts/tch.sh env                              # print the environment, to use it by hand
#
# It makes bench/peers/.venv (torch 2.9.0 from PyPI, ~3 GB with its CUDA libraries; the same venv the PyTorch peers
# use) if it is missing, puts its python first on PATH with LIBTORCH_USE_PYTORCH=1 (tch's build script takes
# LibTorch from that torch) and its libraries on LD_LIBRARY_PATH (the binaries load libtorch at run time).
# Its builds go to their own target directory (burn with tch is a different build of burn: ~20 min on 2 cores the
# first time), so they never disturb the default build. Nothing in the README's two commands or CI needs it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/bench/peers/.venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import torch; assert torch.__version__.startswith("2.9.0")' 2>/dev/null; then
    echo "tch.sh: making $venv with torch==2.9.0 (a few minutes)" >&2
    "$root/bench/peers/setup.sh"
fi
site="$("$venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')"
export PATH="$venv/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
export LD_LIBRARY_PATH="$site/torch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CARGO_TARGET_DIR="${TCH_TARGET_DIR:-${CARGO_TARGET_DIR:-$root/target}-tch}"
# One feature set for binaries and tests, so that burn is built once (cargo rebuilds it for another set).
features="xtask/tch,token-shuffle-test-support/test-tch"
cd "$root"
case "${1:-}" in
    xtask)
        shift
        cargo build --workspace --all-targets --features "$features"
        exec "$CARGO_TARGET_DIR/debug/xtask" "$@"
        ;;
    test)
        shift
        exec cargo test --workspace --features "$features" --lib "$@"
        ;;
    env)
        echo "export PATH=\"$venv/bin:\$PATH\" LIBTORCH_USE_PYTORCH=1 LD_LIBRARY_PATH=\"$LD_LIBRARY_PATH\""
        echo "export CARGO_TARGET_DIR=\"$CARGO_TARGET_DIR\"  # features: $features"
        ;;
    *)
        sed -n '2,12p' "$0" >&2
        exit 2
        ;;
esac
