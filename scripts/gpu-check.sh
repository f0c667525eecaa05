#!/usr/bin/env bash
# Everything a GPU session needs, in two halves, because the GPU machine may have no Rust toolchain and its time
# is scarce (≈ 15 minutes per task, all tries together):
#
#   scripts/gpu-check.sh build        here, with Rust: builds the release xtask with CUDA and the numeric suite's
#                                     test binaries on CUDA (TestBackend = Cuda), strips them and packs them into
#                                     gpu-check/bundle.tar.xz (git-ignored; ≤ 60 MiB so that it can be carried).
#   scripts/gpu-check.sh run [DIR]    on the GPU machine, from the repository root, no Rust needed: unpacks the
#                                     bundle and runs, each under a time limit (≈ 8 minutes in all), the numeric
#                                     suite on CUDA; matmul TFLOP/s (8192³, f32 and bf16); `bench lm` (s = 1, 2, 4)
#                                     in f32 and bf16; `bench highres` at 1024 and 2048 px with lm-small's decoder;
#                                     `bench op`. Writes DIR/gpu-check.md (DIR: $OUT if set, else gpu-check/),
#                                     with the peak GPU memory of each phase read from nvidia-smi.
#
# With the `device` tool of this workplace: build here, then
#   run(command="scripts/gpu-check.sh run", carry=["gpu-check"], timeout_s=600)
# and copy the report's tables into docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bundle_dir=gpu-check

build() {
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/token-shuffle-rs/target}"
  local features="xtask/cuda,token-shuffle-test-support/test-cuda"
  echo "+ cargo test --release --workspace --features $features --no-run"
  # One invocation builds both the xtask binary (its integration tests need it) and the test binaries, so that
  # burn is compiled once for both.
  cargo test --release --workspace --features "$features" --no-run --message-format=json-render-diagnostics \
    >"$CARGO_TARGET_DIR/gpu-check-build.json"
  rm -rf "$bundle_dir/stage" && mkdir -p "$bundle_dir/stage/tests"
  # The numeric suite: the library crates' unit tests (shuffle, VQ, LM, KV cache vs full forward, sampler, losses,
  # resume, speed bench), each run from its crate's directory as cargo would.
  jq -r 'select(.reason == "compiler-artifact" and .profile.test == true and (.target.kind | index("lib")))
         | "\(.target.name) \(.executable)"' "$CARGO_TARGET_DIR/gpu-check-build.json" |
    while read -r name executable; do
      case "$name" in
        token_shuffle | token_shuffle_vqgan | token_shuffle_lm | token_shuffle_train | token_shuffle_eval)
          cp "$executable" "$bundle_dir/stage/tests/$name"
          strip "$bundle_dir/stage/tests/$name"
          ;;
      esac
    done
  cp "$CARGO_TARGET_DIR/release/xtask" "$bundle_dir/stage/xtask"
  strip "$bundle_dir/stage/xtask"
  ls -la "$bundle_dir/stage" "$bundle_dir/stage/tests"
  [ "$(ls "$bundle_dir/stage/tests" | wc -l)" -eq 5 ] || { echo "expected 5 test binaries" >&2; exit 1; }
  tar -C "$bundle_dir/stage" -cf - . | xz -T0 -6 >"$bundle_dir/bundle.tar.xz"
  rm -rf "$bundle_dir/stage"
  local size_mib=$(( $(stat -c %s "$bundle_dir/bundle.tar.xz") / 1048576 ))
  echo "packed $bundle_dir/bundle.tar.xz: $size_mib MiB"
  if [ "$size_mib" -gt 60 ]; then
    echo "the bundle is over the 60 MiB a device call can carry (with the working tree)" >&2
    exit 1
  fi
}

run() {
  local out="${1:-${OUT:-$bundle_dir}}"
  mkdir -p "$out"
  local report="$out/gpu-check.md" bin=/tmp/gpu-check
  rm -rf "$bin" && mkdir -p "$bin"
  xz -dc "$bundle_dir/bundle.tar.xz" | tar -C "$bin" -xf -
  local xtask="$bin/xtask"
  local memlog="$bin/memory.csv"
  # GPU memory in use, every 200 ms, for the peak of each phase.
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$memlog" 2>/dev/null &
  local sampler=$!
  trap 'kill $sampler 2>/dev/null || true' EXIT

  {
    echo "# GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo '```'
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    echo '```'
    echo
    echo "| phase | exit | wall s | peak GPU memory MiB |"
    echo "|---|---|---|---|"
  } >"$report"
  local details="$bin/details.md"
  : >"$details"

  # phase NAME LIMIT_S COMMAND...: runs COMMAND under `timeout`, logs its output, adds a row to the table.
  phase() {
    local name="$1" limit="$2"
    shift 2
    local before start code=0
    before=$(wc -l <"$memlog")
    start=$(date +%s)
    echo "== $name"
    timeout "$limit" "$@" >"$bin/phase.log" 2>&1 || code=$?
    local wall=$(( $(date +%s) - start ))
    local peak
    peak=$(tail -n +"$((before + 1))" "$memlog" | sort -n | tail -1)
    tail -40 "$bin/phase.log"
    echo "| $name | $code$([ "$code" = 124 ] && echo ' (time limit)') | $wall | ${peak:--} |" >>"$report"
    {
      echo
      echo "## $name"
      echo
      echo '```'
      grep -v '^test .* ok$' "$bin/phase.log" | tail -60
      echo '```'
    } >>"$details"
  }

  suite() {
    local failed=0 crate
    for test in "$bin"/tests/*; do
      crate=$(basename "$test" | sed 's/^token_shuffle_//; s/^token_shuffle$/token-shuffle/')
      (cd "crates/$crate" && "$test" --test-threads 4) || failed=1
    done
    return $failed
  }

  phase "numeric suite on CUDA (f32)" 120 suite
  phase "matmul 8192³ f32" 30 "$xtask" bench matmul --backend cuda --size 8192 --repeats 10
  phase "matmul 8192³ bf16" 30 "$xtask" bench matmul --backend cuda-bf16 --size 8192 --repeats 10
  phase "bench lm, f32" 60 "$xtask" bench lm --backend cuda --out "$bin/bench"
  phase "bench lm, bf16" 45 "$xtask" bench lm --backend cuda-bf16 --out "$bin/bench"
  phase "bench highres, f32, lm-small" 90 "$xtask" bench highres --backend cuda --config configs/lm-small.json \
    --resolution 1024,2048 --out "$bin/bench"
  phase "bench highres, bf16, lm-small" 45 "$xtask" bench highres --backend cuda-bf16 \
    --config configs/lm-small.json --resolution 1024,2048 --out "$bin/bench"
  phase "bench op (gather vs permute)" 30 "$xtask" bench op --backend cuda
  cat "$details" >>"$report"
  for file in "$bin"/bench/*.md; do
    [ -e "$file" ] && { echo; echo "## $(basename "$file")"; echo; cat "$file"; } >>"$report"
  done
  echo "wrote $report"
}

case "${1:-}" in
  build) build ;;
  run) shift; run "$@" ;;
  *) echo "usage: scripts/gpu-check.sh build | run [DIR]" >&2; exit 2 ;;
esac
