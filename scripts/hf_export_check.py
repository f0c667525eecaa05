"""Loads a checkpoint written by `cargo xtask export-hf` with transformers and compares its logits with ours.

    bench/peers/.venv/bin/python scripts/hf_export_check.py EXPORTED_DIR

The directory's reference.safetensors holds ids (a caption, the begin-of-image token and a few image codes) and
the logits our LM computed for them over the whole extended vocabulary; the last line printed is max |Δ|.
"""

import sys

import torch
import transformers
from safetensors.torch import load_file

directory = sys.argv[1]
model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
reference = load_file(f"{directory}/reference.safetensors")
with torch.no_grad():
    logits = model(reference["ids"]).logits
print(f"{type(model).__name__}: {sum(p.numel() for p in model.parameters())} parameters, "
      f"{reference['ids'].shape[1]} ids x {logits.shape[2]} logits (transformers {transformers.__version__})")
print(f"max |Δ| = {(logits - reference['logits']).abs().max().item():e}")
