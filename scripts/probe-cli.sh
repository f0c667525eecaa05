#!/usr/bin/env bash
# Hostile-but-fair inputs against the command line, as a new user would try them (the reliability issue's probes):
# changed configs on an existing run, corrupt files, bad flags and sizes, folders with bad captions, a second
# process. Each probe states the exit code it must give and a phrase its message must contain; none may panic
# (exit 101) or leave a run changed where it must not.
#
#   scripts/probe-cli.sh [XTASK]     XTASK: the xtask binary (default: build it with cargo, dev profile)
#
# Prints one line per probe and a summary; exits 1 if any probe failed. Takes ~1 minute on 2 cores once built.
set -uo pipefail
cd "$(dirname "$0")/.."
xtask="${1:-}"
if [ -z "$xtask" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/token-shuffle-rs/target}"
  cargo build -q -p xtask || exit 1
  xtask="$CARGO_TARGET_DIR/debug/xtask"
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export RUST_BACKTRACE=0
passed=0 failed=0 panics=0

# probe NAME WANT_EXIT PHRASE -- COMMAND...: runs COMMAND, checks the exit code and that stderr+stdout has PHRASE.
probe() {
  local name="$1" want="$2" phrase="$3"
  shift 4
  local out code
  out=$("$@" 2>&1)
  code=$?
  [ "$code" = 101 ] && panics=$((panics + 1))
  if [ "$code" = "$want" ] && { [ -z "$phrase" ] || grep -qF -- "$phrase" <<<"$out"; }; then
    passed=$((passed + 1))
    printf 'ok    %-62s exit %s\n' "$name" "$code"
  else
    failed=$((failed + 1))
    printf 'FAIL  %-62s exit %s (want %s, "%s")\n' "$name" "$code" "$want" "$phrase"
    tail -5 <<<"$out" | sed 's/^/        /'
  fi
}

# same NAME FILE_BEFORE FILE_AFTER: a check that a file was left byte for byte as it was.
same() {
  if cmp -s "$2" "$3"; then
    passed=$((passed + 1))
    printf 'ok    %-62s\n' "$1"
  else
    failed=$((failed + 1))
    printf 'FAIL  %-62s\n' "$1"
  fi
}

# with FIELD_EDIT: configs/run-tiny.json with one edit (a jq expression), written to a file whose path is printed.
with() {
  local file
  file="$scratch/config-$RANDOM$RANDOM.json"
  jq "$1" configs/run-tiny.json >"$file"
  echo "$file"
}

run="$scratch/run"
echo "training configs/run-tiny.json into $run"
"$xtask" train --config configs/run-tiny.json --run "$run" >/dev/null 2>&1 || { echo "the tiny run failed"; exit 1; }
cp "$run/run.json" "$scratch/run.json.before"
cp "$run/tokenizer/model.safetensors" "$scratch/tokenizer.before"

echo "== changed configs on an existing run"
probe "tokenizer.model.channels changed" 1 "from another config" -- \
  "$xtask" train --config "$(with '.tokenizer.model.channels = 16 | .tokenizer.model.norm_groups = 4')" --run "$run"
probe "tokenizer.learning_rate changed" 1 "tokenizer.learning_rate" -- \
  "$xtask" train --config "$(with '.tokenizer.learning_rate = 0.001')" --run "$run"
probe "data changed (scenes → twemoji)" 1 "from another config" -- \
  "$xtask" train --config "$(with '.data = "twemoji"')" --run "$run"
probe "lm_images changed" 1 "lm_images" -- "$xtask" train --config "$(with '.lm_images = 16')" --run "$run"
probe "codebook size changed (tokenizer and LM)" 1 "from another config" -- \
  "$xtask" train --config "$(with '.tokenizer.model.codebook_size = 64 | .lm.model.codebook = 64')" --run "$run"
probe "lm.stages[0].steps changed" 1 "--restart-from lm" -- \
  "$xtask" train --config "$(with '.lm.stages[0].steps = 3')" --run "$run"
same "run.json untouched by the refused configs" "$scratch/run.json.before" "$run/run.json"
same "tokenizer weights untouched by the refused configs" "$scratch/tokenizer.before" "$run/tokenizer/model.safetensors"
probe "the unchanged config: up to date" 0 "up to date" -- "$xtask" train --config configs/run-tiny.json --run "$run"
probe "--restart-from with an unknown step" 2 "restart-from" -- \
  "$xtask" train --config configs/run-tiny.json --run "$run" --restart-from decoder
probe "lm.log_every / keep_checkpoints changed (logging only): accepted" 0 "up to date" -- \
  "$xtask" train --config "$(with '.lm.log_every = 1 | .lm.keep_checkpoints = 5')" --run "$run"
mkdir -p "$scratch/not-a-run/lm" && echo mine >"$scratch/not-a-run/lm/notes.txt"
probe "--restart-from on a directory that is not a run" 1 "no run.json" -- \
  "$xtask" train --config configs/run-tiny.json --run "$scratch/not-a-run" --restart-from tokenizer
[ -e "$scratch/not-a-run/lm/notes.txt" ] || { failed=$((failed + 1)); printf 'FAIL  %-62s\n' "  … it deleted lm/"; }

echo "== bad flags"
gen=("$xtask" generate --run "$run" --prompt "a red circle" --out "$scratch/out.png")
probe "--temperature NaN" 1 "temperature" -- "${gen[@]}" --temperature NaN
probe "--temperature -1" 1 "temperature" -- "${gen[@]}" --temperature -1
probe "--temperature 0" 1 "temperature" -- "${gen[@]}" --temperature 0
probe "--cfg NaN" 1 "cfg" -- "${gen[@]}" --cfg NaN
probe "--cfg inf" 1 "cfg" -- "${gen[@]}" --cfg inf
probe "--cfg -1" 1 "cfg" -- "${gen[@]}" --cfg -1
probe "--cfg 1e39 (beyond f32)" 1 "overflow" -- "${gen[@]}" --cfg 1e39
probe "cfg --scales 1e39" 1 "overflow" -- "$xtask" cfg --run "$run" --scales 1e39
probe "--top-k 0" 1 "top-k" -- "${gen[@]}" --top-k 0
probe "--top-p 0" 1 "top-p" -- "${gen[@]}" --top-p 0
probe "--top-p 1.5" 1 "top-p" -- "${gen[@]}" --top-p 1.5
probe "--top-k 1 (greedy) works" 0 "" -- "${gen[@]}" --top-k 1
long_prompt=$(printf 'word%.0s ' $(seq 2000))
out=$("${gen[@]}" --prompt "$long_prompt" 2>&1)
code=$?
if [ "$code" = 1 ] && [ "${#out}" -lt 1000 ] && grep -qF "2000 words" <<<"$out"; then
  passed=$((passed + 1)); printf 'ok    %-62s exit %s\n' "a 2,000-word prompt: refused, quoted short" "$code"
else
  failed=$((failed + 1)); printf 'FAIL  %-62s exit %s, %s chars\n' "a 2,000-word prompt: refused, quoted short" "$code" "${#out}"
  [ "$code" = 101 ] && panics=$((panics + 1))
fi
touch "$scratch/a-file"
probe "--out below a regular file" 1 "$scratch/a-file" -- \
  "$xtask" generate --run "$run" --prompt "a red circle" --out "$scratch/a-file/out.png"

echo "== where generate writes: never over a directory, a device or a run's own file"
gen_to=("$xtask" generate --run "$run" --prompt "a red circle" --out)
mkdir -p "$scratch/keep" && echo mine >"$scratch/keep/mine.txt"
probe "--out an existing directory" 1 "is a directory" -- "${gen_to[@]}" "$scratch/keep"
probe "--out . (run from inside a directory)" 1 "names a directory" -- \
  bash -c 'cd "$1" && shift && exec "$@"' _ "$scratch/keep" "${gen_to[@]}" .
probe "--out .." 1 "names a directory" -- \
  bash -c 'cd "$1" && shift && exec "$@"' _ "$scratch/keep" "${gen_to[@]}" ..
[ -e "$scratch/keep/mine.txt" ] || { failed=$((failed + 1)); printf 'FAIL  %-62s\n' "  … a directory's file was deleted"; }
probe "--out another run directory" 1 "is a directory" -- "${gen_to[@]}" "$run"
cp "$run/lm/model.mpk" "$scratch/model.before"
probe "--out the run's own weights" 1 "is a file of the run directory" -- "${gen_to[@]}" "$run/lm/model.mpk"
probe "--out the run's run.json" 1 "is a file of the run directory" -- "${gen_to[@]}" "$run/run.json"
same "the run's weights untouched" "$scratch/model.before" "$run/lm/model.mpk"
probe "--out /dev/null" 1 "not written" -- "${gen_to[@]}" /dev/null
ln -sf /dev/null "$scratch/dev.png"
probe "--out a link to a device" 1 "symbolic link, device" -- "${gen_to[@]}" "$scratch/dev.png"
[ -c /dev/null ] || { failed=$((failed + 1)); printf 'FAIL  %-62s\n' "  … /dev/null is no longer a device"; }
probe "--out x.gif (a format it does not write)" 1 ".png, .jpg" -- "${gen_to[@]}" "$scratch/x.gif"
probe "--out x (no extension)" 1 ".png, .jpg" -- "${gen_to[@]}" "$scratch/x"
probe "--out x.jpg writes a JPEG" 0 "" -- "${gen_to[@]}" "$scratch/x.jpg"
if ! python3 -c "import sys; sys.exit(open(sys.argv[1],'rb').read(2) != b'\xff\xd8')" "$scratch/x.jpg"; then
  failed=$((failed + 1)); printf 'FAIL  %-62s\n' "  … x.jpg is not a JPEG"
fi
echo old >"$scratch/keep.png"
probe "--out an existing PNG: replaced" 0 "" -- "${gen_to[@]}" "$scratch/keep.png"
leftovers=$(find "$scratch" -maxdepth 2 -name '*.partial*' | wc -l)
[ "$leftovers" = 0 ] || { failed=$((failed + 1)); printf 'FAIL  %-62s\n' "  … $leftovers partial files left"; }

echo "== sizes that overflowed or reached a tensor panic"
probe "count --resolution 18446744073709551600" 1 "too large to count" -- \
  "$xtask" count --config configs/lm-2.7b.json --resolution 18446744073709551600
probe "count --resolution 4294967296 --downsample 1 --window 1" 1 "too large to count" -- \
  "$xtask" count --config configs/lm-2.7b.json --resolution 4294967296 --downsample 1 --window 1
probe "bench lm --grid 0" 1 "holds no image" -- "$xtask" bench lm --grid 0 --repeats 1 --out "$scratch/bench"

echo "== a run directory edited after training"
for case in '.lm.model.decoder.d_model = 32|lm.model.decoder.d_model' \
  '.lm.model.decoder.rope_theta = 5000|lm.model.decoder.rope_theta' '.lm.model.decoder.norm_eps = 0.001|norm_eps'; do
  edit="${case%|*}" phrase="${case#*|}"
  edited="$scratch/edited-$RANDOM"
  cp -r "$run" "$edited"
  jq "$edit" "$run/run.json" >"$edited/run.json"
  probe "generate after run.json's $phrase was edited" 1 "run.json was edited after training" -- \
    "$xtask" generate --run "$edited" --prompt "a red circle" --out "$scratch/e.png"
done
adopted="$scratch/adopted"
cp -r "$run" "$adopted"
rm "$adopted/lm/stage.json"
truncate -s 64 "$adopted/lm/model.mpk"
probe "damaged LM weights without their record: made again" 0 "" -- \
  "$xtask" train --config configs/run-tiny.json --run "$adopted"
probe "  … and the run generates" 0 "" -- \
  "$xtask" generate --run "$adopted" --prompt "a red circle" --out "$scratch/a.png"

probe "eval --images-per-prompt 0" 1 "images-per-prompt" -- "$xtask" eval --run "$run" --images-per-prompt 0
probe "eval --prompts-per-category 0" 1 "prompts-per-category" -- "$xtask" eval --run "$run" --prompts-per-category 0
probe "eval --checkpoint of a step that has none" 1 "checkpoint" -- "$xtask" eval --run "$run" --checkpoint 999
probe "generate from a run that does not exist" 1 "$scratch/nothing" -- \
  "$xtask" generate --run "$scratch/nothing" --prompt "a red circle"
probe "bench generate --repeats 0" 1 "repeats" -- "$xtask" bench generate --repeats 0
probe "bench highres --window 3 (does not divide the grid)" 1 "--window 3" -- \
  "$xtask" bench highres --resolution 64 --window 3 --no-decode

echo "== configs that cannot work, refused before any work"
for case in '.lm.model.decoder.n_heads = 3|n_heads' '.lm_images = 0|lm_images' '.text_vocab_size = 10|text_vocab_size' \
  '.tokenizer.model.norm_groups = 3|norm_groups' '.lm.batch_size = 0|lm.batch_size = 0' '.lm.stages = []|stages' \
  '.lm.final_learning_rate_ratio = -1|lm.final_learning_rate_ratio = -1' \
  '.lm.gradient_clip_norm = -1|lm.gradient_clip_norm = -1' '.lm.weight_decay = -5|lm.weight_decay = -5' \
  '.tokenizer.weight_decay = -5|tokenizer.weight_decay = -5' '.tokenizer.batch_size = 0|tokenizer.batch_size = 0' \
  '.tokenizer.steps = 0|tokenizer.steps = 0' '.lm.valid_every = 0|lm.valid_every = 0' \
  '.lm.checkpoint_every = 0|lm.checkpoint_every = 0' '.lm.log_every = 0|lm.log_every = 0' \
  '.lm.gradient_accumulation = 0|lm.gradient_accumulation = 0' '.lm.stages[0].steps = 0|lm.stages[0].steps = 0' \
  '.tokenizer.valid_images = 0|tokenizer.valid_images = 0' '.lm.stages[0].resolution = 0|holds no image' \
  '.tokenizer.resolution = 0|holds no image'; do
  edit="${case%|*}" phrase="${case#*|}"
  fresh="$scratch/fresh-$RANDOM"
  probe "$edit on a new run" 1 "$phrase" -- "$xtask" train --config "$(with "$edit")" --run "$fresh"
  if [ -e "$fresh/tokenizer" ]; then
    failed=$((failed + 1)); printf 'FAIL  %-62s\n' "  … but the tokenizer step started"
  fi
done
echo '{"data": "scenes", "lm_images": 12,' >"$scratch/broken.json"
probe "a config with a JSON syntax error" 1 "line" -- "$xtask" train --config "$scratch/broken.json" --run "$scratch/x"
probe "a config with an unknown field" 1 "stpes" -- \
  "$xtask" train --config "$(with '.lm.stpes = 3')" --run "$scratch/x"
probe "a config file that does not exist" 1 "$scratch/none.json" -- \
  "$xtask" train --config "$scratch/none.json" --run "$scratch/x"
probe "train-tokenizer --config <a run config>" 1 "is a run config" -- \
  "$xtask" train-tokenizer --config configs/run-tiny.json --out "$scratch/tok"
probe "train-tokenizer --steps 0" 1 "--steps 0" -- \
  "$xtask" train-tokenizer --config configs/vq-tiny.json --steps 0 --out "$scratch/tok"

probe "train-tokenizer --out <a run directory>" 1 "holds run.json" -- \
  "$xtask" train-tokenizer --config configs/vq-tiny.json --steps 1 --out "$run"
probe "train-tokenizer --out <a run's tokenizer step>" 1 "holds stage.json" -- \
  "$xtask" train-tokenizer --config configs/vq-tiny.json --steps 1 --out "$run/tokenizer"

hf=crates/lm/tests/fixtures/hf/qwen2-untied
probe "hf-check on a Qwen2 fixture, with its reference" 0 "max |Δ| = " -- \
  "$xtask" hf-check --model "$hf" --reference "$hf/reference.safetensors"
probe "count --config <a checkpoint directory>" 0 "parameters" -- "$xtask" count --config "$hf" --resolution 256
probe "count --codebook 0" 1 "codebook is 0" -- "$xtask" count --config configs/lm-tiny.json --codebook 0
probe "hf-check --model <not a checkpoint>" 1 "has no config.json" -- "$xtask" hf-check --model "$scratch"
probe "hf-check --reference <not safetensors>" 1 "is not a safetensors file" -- \
  "$xtask" hf-check --model "$hf" --reference "$hf/config.json"

echo "== lm.init (a run from a pretrained checkpoint)"
# A copy of a fixture checkpoint, spoilt one way per probe; the run config names it in lm.init.
spoilt() {
  local dir="$scratch/ckpt-$RANDOM$RANDOM"
  cp -r "crates/lm/tests/fixtures/hf/${2:-llama-gqa}" "$dir"
  (cd "$dir" && eval "$1")
  echo "$dir"
}
init_run() { with ".lm.init = \"$1\" | del(.lm.model.text_vocab, .lm.model.decoder, .lm.model.text_head, .lm.model.text_bos)"; }
probe "lm.init: a directory without config.json" 1 "has no config.json" -- \
  "$xtask" train --config "$(init_run "$scratch")" --run "$scratch/init-run"
ckpt=$(spoilt 'jq ".architectures = [\"GPT2LMHeadModel\"]" config.json > c && mv c config.json')
probe "lm.init: an unknown architecture" 1 "GPT2LMHeadModel is not supported" -- \
  "$xtask" train --config "$(init_run "$ckpt")" --run "$scratch/init-run"
ckpt=$(spoilt 'jq ".rope_parameters.rope_type = \"yarn\"" config.json > c && mv c config.json')
probe "lm.init: an unknown rope type" 1 "yarn" -- \
  "$xtask" train --config "$(init_run "$ckpt")" --run "$scratch/init-run"
ckpt=$(spoilt 'rm tokenizer.json')
probe "lm.init: no tokenizer.json" 1 "tokenizer.json is missing" -- \
  "$xtask" train --config "$(init_run "$ckpt")" --run "$scratch/init-run"
ckpt=$(spoilt 'echo "{ broken" > tokenizer.json')
probe "lm.init: a corrupt tokenizer.json" 1 "tokenizer.json" -- \
  "$xtask" train --config "$(init_run "$ckpt")" --run "$scratch/init-run"
ckpt=$(spoilt 'jq ".vocab_size = 50" config.json > c && mv c config.json')
probe "lm.init: a tokenizer larger than the embedding" 1 "vocab_size = 50" -- \
  "$xtask" train --config "$(init_run "$ckpt")" --run "$scratch/init-run"
ckpt=$(spoilt 'jq ".intermediate_size = 40" config.json > c && mv c config.json')
probe "lm.init: a tensor of another shape than config.json says" 1 "does not match its weights" -- \
  "$xtask" train --config "$(init_run "$ckpt")" --run "$scratch/init-run"
ckpt=$(spoilt 'truncate -s 5000 model-00002-of-00003.safetensors' llama-bf16-sharded)
probe "lm.init: a truncated shard" 1 "model-00002-of-00003.safetensors" -- \
  "$xtask" train --config "$(init_run "$ckpt")" --run "$scratch/init-run"
ckpt=$(spoilt 'rm model-00003-of-00003.safetensors' llama-bf16-sharded)
probe "lm.init: a missing shard" 1 "model-00003-of-00003.safetensors" -- \
  "$xtask" train --config "$(init_run "$ckpt")" --run "$scratch/init-run"
probe "lm.init: a run config field that contradicts the checkpoint" 1 "contradicts the checkpoint" -- \
  "$xtask" train --config "$(with ".lm.init = \"crates/lm/tests/fixtures/hf/llama-gqa\" | .lm.model.text_vocab = 100 | del(.lm.model.text_bos, .lm.model.text_head, .lm.model.decoder)")" --run "$scratch/init-run"
probe "lm.pretrained_learning_rate_scale without lm.init" 1 "lm.init is null" -- \
  "$xtask" train --config "$(with '.lm.pretrained_learning_rate_scale = 0.5')" --run "$scratch/init-run"
[ -e "$scratch/init-run/lm" ] && { echo "FAIL  a refused lm.init run wrote an LM step"; failed=$((failed + 1)); }
probe "pretrain-text --out <a directory with files>" 1 "holds files already" -- \
  "$xtask" pretrain-text --config configs/text-tiny.json --steps 1 --captions 40 --out "$run"

echo "== folders"
folder="$scratch/folder"
mkdir -p "$folder"
"$xtask" train-tokenizer --help >/dev/null
python3 - "$folder" <<'EOF'
import sys, struct, zlib
def png(path, rgb):
    raw = b"".join(b"\x00" + bytes(rgb) * 32 for _ in range(32))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 32, 32, 8, 2, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
for i in range(64):
    png(f"{sys.argv[1]}/img{i:02}.png", (i * 3, 100, 200 - i * 2))
    open(f"{sys.argv[1]}/img{i:02}.txt", "w").write(f"a picture number {i}")
EOF
folder_config=$(with ".data = \"$folder\"")
ln -s . "$folder/loop"
probe "a folder with a symlink loop: each image once" 0 "loaded 64 of 64 images" -- \
  "$xtask" train-tokenizer --config configs/vq-tiny.json --data "$folder" --resolution 32 --steps 1 --valid-every 1 \
  --out "$scratch/loop-tok"
rm "$folder/loop"
rm "$folder/img03.txt"
probe "a folder image without a caption" 1 "img03" -- "$xtask" train --config "$folder_config" --run "$scratch/f1"
probe "  … allowed by allow_uncaptioned" 0 "" -- \
  "$xtask" train --config "$(with ".data = \"$folder\" | .allow_uncaptioned = true")" --run "$scratch/f2"
printf 'a caption \xff\xfe not UTF-8' >"$folder/img03.txt"
probe "a folder caption that is not UTF-8" 1 "img03" -- "$xtask" train --config "$folder_config" --run "$scratch/f3"
echo "not an image" >"$folder/img04.png"
echo "a broken file" >"$folder/img04.txt"
printf 'a picture number 3' >"$folder/img03.txt"
probe "a folder with an undecodable image: skipped and named" 0 "img04" -- \
  "$xtask" train --config "$folder_config" --run "$scratch/f4"

echo "== corrupt files"
cp -r "$run" "$scratch/corrupt"
python3 -c "import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); b[len(b)//2:len(b)//2+4096]=bytes(4096); open(p,'wb').write(b)" \
  "$scratch/corrupt/tokenizer/model.safetensors"
probe "garbled tokenizer weights: train" 1 "tokenizer/model.safetensors" -- \
  "$xtask" train --config configs/run-tiny.json --run "$scratch/corrupt"
probe "garbled tokenizer weights: generate" 1 "tokenizer/model.safetensors" -- \
  "$xtask" generate --run "$scratch/corrupt" --prompt "a red circle" --out "$scratch/c.png"
probe "garbled tokenizer weights: eval" 1 "tokenizer/model.safetensors" -- "$xtask" eval --run "$scratch/corrupt"
cp -r "$run" "$scratch/truncated"
truncate -s 100 "$scratch/truncated/lm/model.mpk"
probe "truncated final LM: train" 1 "lm/model.mpk" -- \
  "$xtask" train --config configs/run-tiny.json --run "$scratch/truncated"
probe "truncated final LM: generate" 1 "lm/model.mpk" -- \
  "$xtask" generate --run "$scratch/truncated" --prompt "a red circle" --out "$scratch/t.png"
probe "truncated final LM: no burn format note" 1 "--restart-from lm" -- \
  "$xtask" train --config configs/run-tiny.json --run "$scratch/truncated"
if "$xtask" train --config configs/run-tiny.json --run "$scratch/truncated" 2>&1 | grep -q "0.14"; then
  failed=$((failed + 1)); printf 'FAIL  %-62s\n' "  … the error mentions burn's 0.14 format note"
fi
probe "truncated final LM: --restart-from lm repairs it" 0 "restarting from the lm step" -- \
  "$xtask" train --config configs/run-tiny.json --run "$scratch/truncated" --restart-from lm

echo "== a second process"
second="$scratch/second"
"$xtask" train --config "$(with '.lm.stages[0].steps = 300')" --run "$second" >/dev/null 2>&1 &
first_pid=$!
for _ in $(seq 100); do [ -e "$second/run.json" ] && break; sleep 0.1; done
probe "a second train on a directory in use" 1 "already in use by process $first_pid" -- \
  "$xtask" train --config "$(with '.lm.stages[0].steps = 300')" --run "$second"
kill -9 "$first_pid" 2>/dev/null
wait "$first_pid" 2>/dev/null
probe "after the first was killed (-9): the lock is free, the run resumes" 0 "" -- \
  "$xtask" train --config "$(with '.lm.stages[0].steps = 300')" --run "$second"

echo "== devices, the dashboard, shards"
probe "--devices gpu:0" 2 "is not a device" -- "$xtask" train --config configs/run-tiny.json --devices gpu:0
probe "--devices cuda:0 on flex" 1 "--backend is flex" -- \
  "$xtask" train --config configs/run-tiny.json --run "$scratch/dev" --devices cuda:0
probe "more devices than micro-batches" 1 "gradient_accumulation = 1" -- \
  "$xtask" train --config configs/run-tiny.json --run "$scratch/dev" --devices cpu,cpu
probe "--tui without a terminal" 1 "not one" -- \
  "$xtask" train --config configs/run-tiny.json --run "$scratch/tui" --tui
probe "--until bogus" 2 "unknown stage" -- "$xtask" train --config configs/run-tiny.json --until bogus
probe "encode --shard 3/2" 2 "0 <= K < N" -- "$xtask" encode --config configs/run-tiny.json --shard 3/2
probe "encode on scenes" 1 "encodes webdataset shards" -- "$xtask" encode --config configs/run-tiny.json --run "$run"
probe "encode on a directory that is no run" 1 "no run here yet" -- \
  "$xtask" encode --config configs/run-tiny.json --run "$scratch/none"
[ -e "$scratch/none" ] && { failed=$((failed + 1)); printf 'FAIL  %-62s\n' "  … encode created the directory"; }
probe "shards that do not exist" 1 "2 of 2 shards do not exist" -- \
  "$xtask" train --config "$(with ".data = \"$scratch/shards/{0..1}.tar\"")" --run "$scratch/sh"
mkdir -p "$scratch/shards" && echo "not a tar" >"$scratch/shards/0.tar" && echo "x" >"$scratch/shards/1.tar"
probe "a shard that is not a tar file" 1 "not a readable tar file" -- \
  "$xtask" train --config "$(with ".data = \"$scratch/shards/{0..1}.tar\"")" --run "$scratch/sh2"

echo "== Ctrl-C"
"$xtask" train --config "$(with '.lm.stages[0].steps = 100000')" --run "$scratch/sigint" >"$scratch/sigint.log" 2>&1 &
pid=$!
for _ in $(seq 100); do [ -e "$scratch/sigint/run.json" ] && break; sleep 0.1; done
sleep 1
kill -INT "$pid"
wait "$pid"
code=$?
if [ "$code" = 130 ] && grep -qF "interrupted (SIGINT)" "$scratch/sigint.log"; then
  passed=$((passed + 1)); printf 'ok    %-62s exit %s\n' "SIGINT during training: says so, how to go on" "$code"
else
  failed=$((failed + 1)); printf 'FAIL  %-62s exit %s\n' "SIGINT during training: says so, how to go on" "$code"
fi

echo "== encode --merge"
python3 - "$scratch/wds" <<'EOF'
import io, os, sys, tarfile, struct, zlib
def png(rgb):
    raw = b"".join(b"\x00" + bytes(rgb) * 32 for _ in range(32))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 32, 32, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
os.makedirs(sys.argv[1], exist_ok=True)
for shard in range(2):
    with tarfile.open(f"{sys.argv[1]}/{shard}.tar", "w") as tar:
        for i in range(24):
            for name, data in [(f"s{i:03}.png", png((i * 9, 40 * shard, 100))), (f"s{i:03}.txt", f"a picture {i}".encode())]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
EOF
wds_config=$(with ".data = \"$scratch/wds/{0..1}.tar\"")
"$xtask" train --config "$wds_config" --run "$scratch/wds-run" --until text >/dev/null 2>&1
probe "encode --shard 0/1" 0 "" -- "$xtask" encode --config "$wds_config" --run "$scratch/wds-run" --shard 0/1
probe "encode --merge" 0 "all 2 shards encoded" -- "$xtask" encode --config "$wds_config" --run "$scratch/wds-run" --merge
locks=$(find "$scratch/wds-run/codes" -name '*.train.lock' | wc -l)
if [ "$locks" = 0 ]; then
  passed=$((passed + 1)); printf 'ok    %-62s\n' "  … and leaves no *.train.lock files"
else
  failed=$((failed + 1)); printf 'FAIL  %-62s\n' "  … $locks *.train.lock files left"
fi

echo "== several machines (bad --nodes, --node-rank, --coordinator; a launcher's bad variables)"
nodes=("$xtask" train --config configs/run-tiny.json --run "$scratch/nodes")
probe "--nodes 0" 1 "at least one node" -- "${nodes[@]}" --nodes 0 --node-rank 0 --coordinator 127.0.0.1:29500
probe "--node-rank 2 of --nodes 2" 1 "rank 2 of 2 nodes" -- \
  "${nodes[@]}" --nodes 2 --node-rank 2 --coordinator 127.0.0.1:29500
probe "--coordinator without a port" 2 "expected HOST:PORT" -- \
  "${nodes[@]}" --nodes 2 --node-rank 0 --coordinator localhost
probe "--coordinator with port 0" 2 "port 0" -- "${nodes[@]}" --nodes 2 --node-rank 0 --coordinator 127.0.0.1:0
probe "--coordinator that does not resolve" 1 "does not resolve" -- \
  "${nodes[@]}" --nodes 2 --node-rank 1 --coordinator no-such-host.invalid:29500
probe "--nodes without --node-rank" 2 "--node-rank" -- "${nodes[@]}" --nodes 2 --coordinator 127.0.0.1:29500
probe "WORLD_SIZE=two (torchrun's variables)" 1 "WORLD_SIZE" -- \
  env WORLD_SIZE=two RANK=0 MASTER_ADDR=127.0.0.1 "${nodes[@]}"
probe "a coordinator nobody runs: stops at the timeout" 1 "did not all arrive" -- \
  "${nodes[@]}" --nodes 2 --node-rank 1 --coordinator 127.0.0.1:9 --collective-timeout 2

echo "== a NaN loss"
probe "learning rate 1e30: stops naming the step, advises a new run dir" 1 "new run directory" -- \
  "$xtask" train --config "$(with '.lm.stages[0].learning_rate = 1e30 | .lm.stages[0].steps = 20')" --run "$scratch/nan"

echo
echo "probes: $passed passed, $failed failed, $panics panics (exit 101)"
[ "$failed" = 0 ] && [ "$panics" = 0 ]
