"""Makes the HuggingFace fixtures of crates/lm/tests/fixtures/hf: tiny random-weight checkpoints written by
transformers itself, each with a tokenizer.json and transformers' own logits of a fixed text, so that our loader
is checked against the reference implementation's numbers (crates/lm/tests/hf.rs).

    bench/peers/setup.sh && bench/peers/.venv/bin/pip install transformers   # once
    bench/peers/.venv/bin/python scripts/hf_fixtures.py

Three checkpoints cover what Llama / Qwen2 / Mistral families use:
- llama-gqa:    LlamaForCausalLM, grouped KV heads, llama3 rope scaling, tied embeddings, f32, one file.
- qwen2-untied: Qwen2ForCausalLM, q/k/v biases, untied head, config.json in the older top-level form
                (rope_theta / rope_scaling beside the other fields, as most published checkpoints carry it).
- llama-bf16-sharded: LlamaForCausalLM in bf16, head_dim 12 != hidden / heads, linear rope scaling, an untied
                head, written in shards through model.safetensors.index.json.
- mistral-f16:  MistralForCausalLM in f16 with a sliding window (longer than any sequence here), untied.
Each directory gets reference.safetensors: `ids` (int64 [1, T]) and `logits` (f32 [1, T, vocab]) from
transformers in f32 (the bf16 checkpoint loaded as f32, which is what our loader computes in).
"""

import json
import pathlib
import shutil

import torch
import transformers
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/lm/tests/fixtures/hf"
VOCAB = 96
TEXT = "a red circle to the left of a blue square"
CORPUS = [
    "a red circle to the left of a blue square",
    "two green triangles above a yellow star",
    "a purple square below an orange circle",
    "three blue stars and a red triangle",
] * 20


def tokenizer():
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    # Metaspace, not byte-level: a byte-level alphabet alone is 256 ids, more than this tiny vocabulary.
    bpe.pre_tokenizer = pre_tokenizers.Metaspace()
    bpe.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB - 8,
        special_tokens=["<unk>", "<s>", "</s>"],
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS, trainer)
    return bpe


def write(name, config, dtype=torch.float32, shard=None, legacy_config=False):
    torch.manual_seed(sum(map(ord, name)))
    model = transformers.AutoModelForCausalLM.from_config(config).to(torch.float32).eval()
    # Larger than transformers' 0.02 init, so that the logits differ clearly across positions and layers.
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    directory = OUT / name
    shutil.rmtree(directory, ignore_errors=True)
    model.to(dtype).save_pretrained(directory, max_shard_size=shard or "50GB")
    bpe = tokenizer()
    bpe.save(str(directory / "tokenizer.json"))
    ids = bpe.encode(TEXT).ids
    assert max(ids) < VOCAB, ids
    if legacy_config:
        path = directory / "config.json"
        raw = json.loads(path.read_text())
        rope = raw.pop("rope_parameters")
        raw["rope_theta"] = rope.pop("rope_theta")
        raw["rope_scaling"] = None if rope.get("rope_type") == "default" else rope
        path.write_text(json.dumps(raw, indent=2))
    # The reference: the checkpoint as written, read back by transformers, in f32.
    loaded = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    ids = torch.tensor([[1] + ids])
    with torch.no_grad():
        logits = loaded(ids).logits.float()
    save_file({"ids": ids.to(torch.int64), "logits": logits.contiguous()}, directory / "reference.safetensors")
    files = sorted(p.name for p in directory.iterdir())
    size = sum(p.stat().st_size for p in directory.iterdir())
    print(f"{name}: {files}, {size / 1024:.0f} KiB, T = {ids.shape[1]}, logits {tuple(logits.shape)}")


def main():
    common = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
    )
    write(
        "llama-gqa",
        transformers.LlamaConfig(
            **common,
            tie_word_embeddings=True,
            rope_parameters=dict(
                rope_type="llama3",
                rope_theta=500000.0,
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=16,
            ),
        ),
    )
    write(
        "qwen2-untied",
        transformers.Qwen2Config(
            **common,
            tie_word_embeddings=False,
            rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
        ),
        legacy_config=True,
    )
    write(
        "llama-bf16-sharded",
        transformers.LlamaConfig(
            **common,
            head_dim=12,
            tie_word_embeddings=False,
            rope_parameters=dict(rope_type="linear", rope_theta=10000.0, factor=2.0),
        ),
        dtype=torch.bfloat16,
        shard="20KB",
    )
    write(
        "mistral-f16",
        transformers.MistralConfig(
            **common,
            sliding_window=32,
            tie_word_embeddings=False,
            rope_parameters=dict(rope_type="default", rope_theta=10000.0),
        ),
        dtype=torch.float16,
    )
    print("transformers", transformers.__version__, "torch", torch.__version__)


if __name__ == "__main__":
    main()
