#!/usr/bin/env bash
# Scratch vs text-pretrained initialisation at equal total wall-clock (issue 28, part 7). Arm A is CONFIG (a run
# config with one LM stage) from random weights; arm B spends part of A's LM time on text pretraining
# (TEXT_CONFIG, whose decoder must be CONFIG's: `pretrain-text` on the scene grammar's training captions) and the
# rest on the same recipe started from that checkpoint (`lm.init`; the checkpoint then decides the decoder, the
# text vocabulary and head). B's LM steps = A's minus the pretraining's seconds over A's measured seconds per LM
# step. Both arms share the VQ tokenizer (B's copy of A's step: same config, same seed, so the pipeline takes it
# as finished). Each arm is then scored on the held-out benchmark with the default prompt seed and seed 7.
#
#   bash scripts/ablate-pretrained.sh                     # the demo's scale: ~35 min on 2 cores
#   CONFIG=configs/run-small.json TEXT_CONFIG=configs/text-mini.json TEXT_STEPS=3000 \
#     OUT=runs/ablate-pretrained-small bash scripts/ablate-pretrained.sh      # run-small's: ~4 h
set -euo pipefail
cd "$(dirname "$0")/.."
# The target dir CI and scripts/probe-cli.sh use, so that this does not build a second one.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/token-shuffle-rs/target}"
CONFIG=${CONFIG:-configs/run-demo.json}
TEXT_CONFIG=${TEXT_CONFIG:-configs/text-tiny.json}
OUT=${OUT:-runs/ablate-pretrained}
TEXT_STEPS=${TEXT_STEPS:-600}
mkdir -p "$OUT"
# XTASK=path/to/a/copied/xtask binary keeps a long run on one build while the working tree changes.
xtask() { if [ -n "${XTASK:-}" ]; then "$XTASK" "$@"; else cargo xtask "$@"; fi; }
[ "$(jq '.lm.stages | length' "$CONFIG")" = 1 ] || { echo "$CONFIG: one LM stage expected" >&2; exit 1; }
steps=$(jq '.lm.stages[0].steps' "$CONFIG")
batch=$(jq '.lm.batch_size * .lm.gradient_accumulation' "$CONFIG")

# Arm A: the recipe from scratch.
xtask train --config "$CONFIG" --run "$OUT/scratch"
# Seconds per LM step of arm A and of text pretraining on a quiet machine: each from the 75th percentile of its
# logged per-window throughput, so that a build or another job sharing the cores while one arm ran (this script is
# meant to run under `nice` in the background) does not move the budget. The raw means are printed beside them.
if [ ! -f "$OUT/text/pretraining.json" ]; then
  rm -rf "$OUT/text"
  xtask pretrain-text --config "$TEXT_CONFIG" --out "$OUT/text" --steps "$TEXT_STEPS" 2> >(tee "$OUT/text.log" >&2)
fi
read -r step_seconds text_seconds lm_steps < <(python3 -c "
import json, re, statistics
def quiet(rates): return statistics.quantiles(rates, n=4)[2] if len(rates) >= 4 else max(rates)
lm = [json.loads(l)['train']['images_per_second'] for l in open('$OUT/scratch/lm/metrics.jsonl') if l.startswith('{\"train\"')]
text = [float(m) for m in re.findall(r'([0-9.]+) captions/s', open('$OUT/text.log').read())]
raw_text = json.load(open('$OUT/text/pretraining.json'))['seconds']
step = $batch / quiet(lm)
# The run's wall time scaled by how much slower its windows ran on average (harmonic mean) than quietly.
text_s = raw_text * quiet(text) / statistics.harmonic_mean(text)
import sys
print(f'arm A: {$batch / statistics.harmonic_mean(lm):.3f} s per LM step as run, {step:.3f} quiet; '
      f'text pretraining {raw_text:.0f} s as run, {text_s:.0f} quiet', file=sys.stderr)
print(step, text_s, int(round($steps - text_s / step)))")
echo "arm B trains $lm_steps LM steps ($steps minus $text_seconds s of text pretraining at $step_seconds s per step)"
jq --arg init "$OUT/text" --argjson steps "$lm_steps" \
  '.lm.init = $init | .lm.stages[0].steps = $steps
   | del(.lm.model.text_vocab, .lm.model.decoder, .lm.model.text_head, .lm.model.text_bos)' \
  "$CONFIG" >"$OUT/pretrained.json"
if [ ! -d "$OUT/pretrained/tokenizer" ]; then
  mkdir -p "$OUT/pretrained"
  cp -r "$OUT/scratch/tokenizer" "$OUT/pretrained/tokenizer"
fi
xtask train --config "$OUT/pretrained.json" --run "$OUT/pretrained"

for arm in scratch pretrained; do
  xtask eval --run "$OUT/$arm" | tee "$OUT/eval-$arm-default.txt"
  xtask eval --run "$OUT/$arm" --prompt-seed 7 | tee "$OUT/eval-$arm-7.txt"
done
