#!/usr/bin/env bash
# Scratch vs text-pretrained initialisation at equal total wall-clock (issue 28, part 7), at the demo's scale:
# arm A is configs/run-demo.json from random weights; arm B spends part of A's LM time on text pretraining
# (configs/text-tiny.json: lm-tiny's decoder on the scene grammar's training captions, `pretrain-text`) and the
# rest on the same T2I recipe started from that checkpoint (`lm.init`). B's LM steps = A's minus the pretraining's
# seconds over A's measured seconds per LM step. Both arms share the same VQ tokenizer (B's copy of A's step:
# same config, same seed, so the pipeline takes it as finished). Each arm is then scored on the held-out
# benchmark with the default prompt seed and with prompt seed 7.
#
#   bash scripts/ablate-pretrained.sh          # ~35 min on 2 cores; OUT=… TEXT_STEPS=… to change
set -euo pipefail
cd "$(dirname "$0")/.."
# The target dir CI and scripts/probe-cli.sh use, so that this does not build a second one.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/token-shuffle-rs/target}"
OUT=${OUT:-runs/ablate-pretrained}
TEXT_STEPS=${TEXT_STEPS:-600}
mkdir -p "$OUT"
xtask() { cargo xtask "$@"; }

# Arm A: the demo's recipe from scratch.
xtask train --config configs/run-demo.json --run "$OUT/scratch"
# Seconds per LM step of arm A, from its logged throughput (batch / images per second).
step_seconds=$(python3 -c "
import json, sys
rates = [json.loads(l)['train']['images_per_second'] for l in open('$OUT/scratch/lm/metrics.jsonl') if l.startswith('{\"train\"')]
print(16 / (sum(rates) / len(rates)))")

# Arm B: text pretraining (timed), then the same recipe from its checkpoint for the LM time that is left.
if [ ! -f "$OUT/text-tiny/pretraining.json" ]; then
  rm -rf "$OUT/text-tiny"
  xtask pretrain-text --config configs/text-tiny.json --out "$OUT/text-tiny" --steps "$TEXT_STEPS"
fi
text_seconds=$(python3 -c "import json; print(json.load(open('$OUT/text-tiny/pretraining.json'))['seconds'])")
lm_steps=$(python3 -c "print(int(round(3000 - $text_seconds / $step_seconds)))")
echo "arm A: $step_seconds s per LM step; text pretraining took $text_seconds s, so arm B trains $lm_steps LM steps"
cat > "$OUT/pretrained.json" <<JSON
{ "lm": { "init": "$OUT/text-tiny",
          "stages": [{ "resolution": 64, "window": 2, "steps": $lm_steps, "learning_rate": 0.002 }] } }
JSON
if [ ! -d "$OUT/pretrained/tokenizer" ]; then
  mkdir -p "$OUT/pretrained"
  cp -r "$OUT/scratch/tokenizer" "$OUT/pretrained/tokenizer"
fi
xtask train --config "$OUT/pretrained.json" --run "$OUT/pretrained"

for arm in scratch pretrained; do
  for seed in default 7; do
    if [ "$seed" = default ]; then flags=(); else flags=(--prompt-seed "$seed"); fi
    xtask eval --run "$OUT/$arm" "${flags[@]}" | tee "$OUT/eval-$arm-$seed.txt"
  done
done
