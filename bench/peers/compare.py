"""Ours against PyTorch eager on the same LM, interleaved: `cargo xtask bench lm` and lm_peer.py take turns for
`--rounds` rounds (each with its own warm-up), on the same machine, and the ratios are printed as a Markdown table.

Run from the repository root after bench/peers/setup.sh:
    bench/peers/.venv/bin/python bench/peers/compare.py [--preset lm-tiny|lm-small|vq-tiny] [--rounds 3] [--repeats 3]

`cargo xtask` must be on a built tree (the first build takes ~15 min); CARGO_TARGET_DIR is passed through.
With `--backend tch` (LibTorch), ours runs through scripts/tch.sh, which builds and runs xtask with `--features tch`.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PRESETS = {
    # name: (our LM preset, grid, batch, the peer's model flags)
    "lm-tiny": ("configs/lm-tiny.json", 16, 8,
                ["--d", "128", "--layers", "4", "--heads", "4", "--mlp", "344", "--text-vocab", "512",
                 "--codebook", "256", "--max-text-len", "32", "--blocks", "2"]),
    "lm-small": ("configs/lm-small.json", 32, 8,
                 ["--d", "768", "--layers", "12", "--heads", "12", "--mlp", "2048", "--text-vocab", "8192",
                  "--codebook", "8192", "--max-text-len", "64", "--blocks", "2"]),
}


def xtask(args):
    """The command that runs our `cargo xtask` for the chosen backend."""
    if args.backend.startswith("tch"):
        return [os.path.join(HERE, "..", "..", "scripts", "tch.sh"), "xtask"]
    return ["cargo", "xtask"]


def ours(args, preset, out):
    config, grid, batch, _ = PRESETS[preset]
    command = [*xtask(args), "bench", "lm", "--backend", args.backend, "--config", config, "--grid", str(grid),
               "--windows", args.windows, "--batch-size", str(batch), "--warmup", str(args.warmup),
               "--repeats", str(args.repeats), "--out", out]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(out, f"lm-{args.backend}.json")) as f:
        report = json.load(f)
    return {row["window"]: row for row in report["rows"]}


def theirs(args, preset):
    _, grid, batch, flags = PRESETS[preset]
    command = [sys.executable, os.path.join(HERE, "lm_peer.py"), *flags, "--grid", str(grid), "--windows",
               args.windows, "--batch-size", str(batch), "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
    lines = subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()
    rows = [json.loads(line) for line in lines if line.startswith("{")]
    return {row["window"]: row for row in rows}


def vq(args):
    """The VQ tokenizer (vq-tiny at 64 px, batch 8): training step, encode, decode, interleaved rounds."""
    samples, params = {}, {}
    for round_ in range(args.rounds):
        print(f"round {round_ + 1}/{args.rounds}", file=sys.stderr)
        ours = subprocess.run([*xtask(args), "bench", "tokenizer", "--backend", args.backend, "--resolutions",
                               "64", "--batch", "8", "--repeats", str(args.repeats), "--json"],
                              check=True, capture_output=True, text=True).stdout
        theirs = subprocess.run([sys.executable, os.path.join(HERE, "vq_peer.py"), "--resolutions", "64",
                                 "--batch", "8", "--repeats", str(args.repeats)],
                                check=True, capture_output=True, text=True).stdout
        for side, out in (("ours", ours), ("torch", theirs)):
            for line in out.splitlines():
                if line.startswith("{"):
                    row = json.loads(line)
                    params[side] = row["parameters"]
                    for what in ("train", "encode", "decode"):
                        samples.setdefault((side, what), []).append(statistics.median(row[f"{what}_ms"]))
    print(f"vq-tiny (configs/vq-tiny.json) at 64 px, batch 8, on {args.backend} vs PyTorch eager CPU; {args.rounds} "
          f"interleaved rounds of 1 warm-up + {args.repeats} timed repetitions; parameters {params['ours']:,} / "
          f"{params['torch']:,}; ms per batch (range of the rounds' medians); ratio = ours / PyTorch.\n")
    print("| part | ours | PyTorch | ratio |")
    print("|---|---|---|---|")
    for what in ("train", "encode", "decode"):
        a, b = samples[("ours", what)], samples[("torch", what)]
        print(f"| {what} | {min(a):.1f}–{max(a):.1f} | {min(b):.1f}–{max(b):.1f} | "
              f"{statistics.median(a) / statistics.median(b):.2f}× |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=[*PRESETS, "vq-tiny"], default="lm-tiny")
    parser.add_argument("--backend", default="flex")
    parser.add_argument("--windows", default="1,2,4")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.preset == "vq-tiny":
        return vq(args)

    samples = {}  # (window, side, what) -> per-round medians
    params = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}/{args.rounds}", file=sys.stderr)
            for window, row in ours(args, args.preset, os.path.join(tmp, str(round_))).items():
                samples.setdefault((window, "ours", "train"), []).append(row["train_step_ms"])
                samples.setdefault((window, "ours", "generate"), []).append(row["generate_ms"])
                params[(window, "ours")] = row["parameters"]
            for window, row in theirs(args, args.preset).items():
                samples.setdefault((window, "torch", "train"), []).append(statistics.median(row["train_ms"]))
                samples.setdefault((window, "torch", "generate"), []).append(statistics.median(row["generate_ms"]))
                params[(window, "torch")] = row["parameters"]
                torch_version, threads = row["torch"], row["threads"]

    def cell(window, side, what):
        values = samples[(window, side, what)]
        return f"{min(values):.1f}–{max(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"

    def ratio(window, what):
        a = statistics.median(samples[(window, "ours", what)])
        b = statistics.median(samples[(window, "torch", what)])
        return a / b

    print(f"{args.preset} on {args.backend} vs PyTorch {torch_version} eager CPU ({threads} threads); "
          f"{args.rounds} interleaved rounds of {args.warmup} warm-up + {args.repeats} timed repetitions each; "
          "ms per step (range of the rounds' medians); ratio = ours / PyTorch (medians).\n")
    print("| s | params ours / PyTorch | train ms, ours | train ms, PyTorch | train ratio | generate ms, ours | "
          "generate ms, PyTorch | generate ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for window in sorted({w for (w, _, _) in samples}):
        print(f"| {window} | {params[(window, 'ours')]:,} / {params[(window, 'torch')]:,} | "
              f"{cell(window, 'ours', 'train')} | {cell(window, 'torch', 'train')} | {ratio(window, 'train'):.2f}× | "
              f"{cell(window, 'ours', 'generate')} | {cell(window, 'torch', 'generate')} | "
              f"{ratio(window, 'generate'):.2f}× |")


if __name__ == "__main__":
    main()
