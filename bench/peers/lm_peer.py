"""PyTorch eager peer of token-shuffle-rs's LM (crates/lm), for side-by-side speed: the same model, the same shapes.

What is the same as `cargo xtask bench lm` (crates/eval/src/speed.rs), layer by layer:
- one embedding table over text ids + 5 specials + K image codes;
- Token-Shuffle (s > 1): a shared d -> d/s^2 linear (with bias), the s x s window concatenated row-major, then
  residual MLP blocks x + W2 GELU(W1 LayerNorm(x)) (hidden d, with biases); Token-Unshuffle: the same blocks, a split
  into s^2 groups of d/s^2 and a shared d/s^2 -> d linear (with bias); an image head d -> K without bias;
- a Llama decoder: pre-norm RMSNorm (with weight), attention with q/k/v/o linears without bias, rotary positions,
  scaled dot-product attention (causal + the key bias that hides left padding, as one additive mask), SwiGLU
  (silu(W_in x) * W_gate x, no biases) and a down projection, a final RMSNorm;
- the loss: image cross-entropy + 1e-4 * z-loss (mean logsumexp^2), AdamW (lr 1e-4), batch 8, captions of 16 ids,
  random codes;
- generation of one image with a KV cache, batch 1, no CFG, temperature 1, top-k 1000, sampled on the host side of
  PyTorch (torch.multinomial), one window of s^2 codes per step.

The parameter count is printed; it equals the Rust model's (count.rs) for every s.
Prints one JSON object per line: {"peer": "pytorch", "window": s, "train_ms": [...], "generate_ms": [...], ...}.
"""

import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

SPECIALS = 5


class RmsNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(max_len, head_dim, theta=10000.0):
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    angles = torch.outer(torch.arange(max_len).float(), inv)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin, start):
    # x: [B, H, T, hd]; rotates interleaved pairs (burn's RotaryEncoding layout).
    t = x.shape[2]
    cos, sin = cos[start:start + t], sin[start:start + t]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2)


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads, self.hd = heads, d // heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))

    def forward(self, x, rope, cache, bias):
        b, t, d = x.shape
        split = lambda y: y.view(b, t, self.heads, self.hd).transpose(1, 2)
        start = 0 if cache is None else cache["len"]
        q = apply_rope(split(self.q(x)), *rope, start)
        k = apply_rope(split(self.k(x)), *rope, start)
        v = split(self.v(x))
        if cache is not None:
            cache["k"][:, :, start:start + t] = k
            cache["v"][:, :, start:start + t] = v
            cache["len"] = start + t
            k, v = cache["k"][:, :, :start + t], cache["v"][:, :, :start + t]
        keys = k.shape[2]
        mask = bias[:, None, None, :keys].expand(b, 1, t, keys)
        if t > 1:
            causal = torch.ones(t, keys, dtype=torch.bool).tril(keys - t)
            mask = mask.masked_fill(~causal, float("-inf"))
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o(context.transpose(1, 2).reshape(b, t, d))


class Layer(nn.Module):
    def __init__(self, d, heads, hidden):
        super().__init__()
        self.attention_norm, self.mlp_norm = RmsNorm(d), RmsNorm(d)
        self.attention = Attention(d, heads)
        self.inner = nn.Linear(d, hidden, bias=False)
        self.gate = nn.Linear(d, hidden, bias=False)
        self.down = nn.Linear(hidden, d, bias=False)

    def forward(self, x, rope, cache, bias):
        x = x + self.attention(self.attention_norm(x), rope, cache, bias)
        y = self.mlp_norm(x)
        return x + self.down(F.silu(self.inner(y)) * self.gate(y))


class ResidualMlp(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm, self.expand, self.project = nn.LayerNorm(d), nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x):
        return x + self.project(F.gelu(self.expand(self.norm(x))))


def window_merge(x, s):
    # [B, H, W, c] -> [B, (H/s)(W/s), s*s*c], row-major inside each window.
    b, h, w, c = x.shape
    return x.view(b, h // s, s, w // s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, (h // s) * (w // s), s * s * c)


def window_split(x, h, w, s):
    # [B, N, s*s] -> [B, H, W]
    b = x.shape[0]
    return x.view(b, h // s, w // s, s, s).permute(0, 1, 3, 2, 4).reshape(b, h, w)


class TokenShuffleLm(nn.Module):
    def __init__(self, text_vocab, codebook, grid, max_text_len, d, layers, heads, hidden, window, blocks):
        super().__init__()
        self.text_vocab, self.codebook, self.grid, self.s = text_vocab, codebook, grid, window
        self.embedding = nn.Embedding(text_vocab + SPECIALS + codebook, d)
        s2 = window * window
        self.compress = nn.Linear(d, d // s2) if window > 1 else None
        self.fuse = nn.ModuleList(ResidualMlp(d) for _ in range(blocks if window > 1 else 0))
        self.layers = nn.ModuleList(Layer(d, heads, hidden) for _ in range(layers))
        self.norm = RmsNorm(d)
        self.unfuse = nn.ModuleList(ResidualMlp(d) for _ in range(blocks if window > 1 else 0))
        self.expand = nn.Linear(d // s2, d) if window > 1 else None
        self.head = nn.Linear(d, codebook, bias=False)
        self.windows = (grid // window) ** 2
        self.max_len = max_text_len + 2 + self.windows - 1
        self.rope = rope_tables(self.max_len, d // heads)

    def image_tokens(self, codes):
        b, h, w = codes.shape
        x = self.embedding(codes + self.text_vocab + SPECIALS)
        if self.compress is not None:
            x = self.compress(x)
        x = window_merge(x, self.s)
        for block in self.fuse:
            x = block(x)
        return x

    def decode(self, x, caches, bias):
        for i, layer in enumerate(self.layers):
            x = layer(x, self.rope, None if caches is None else caches[i], bias)
        return self.norm(x)

    def window_logits(self, hidden):
        for block in self.unfuse:
            hidden = block(hidden)
        b, n, d = hidden.shape
        s2 = self.s * self.s
        split = hidden.view(b, n, s2, d // s2)
        if self.expand is not None:
            split = self.expand(split)
        return self.head(split)  # [B, N, s2, K]

    def loss(self, prompt, codes):
        b, p = prompt.shape
        n = self.windows
        x = torch.cat([self.embedding(prompt), self.image_tokens(codes)[:, : n - 1]], 1)
        bias = torch.zeros(b, p + n - 1)  # no padding in the bench; the additive mask is still applied
        hidden = self.decode(x, None, bias)
        logits = self.window_logits(hidden[:, p - 1:]).reshape(-1, self.codebook)
        targets = window_merge(codes.unsqueeze(-1), self.s).reshape(-1)
        lse = torch.logsumexp(logits, -1)
        ce = (lse - logits.gather(1, targets[:, None]).squeeze(1)).mean()
        return ce + 1e-4 * lse.pow(2).mean()

    @torch.inference_mode()
    def generate(self, prompt, generator, top_k=1000):
        b, p = prompt.shape
        d = self.embedding.embedding_dim
        heads = self.layers[0].attention.heads
        caches = [
            {"k": torch.zeros(b, heads, self.max_len, d // heads), "v": torch.zeros(b, heads, self.max_len, d // heads),
             "len": 0}
            for _ in self.layers
        ]
        bias = torch.zeros(b, self.max_len)
        hidden = self.decode(self.embedding(prompt), caches, bias)[:, -1:]
        codes = []
        for step in range(self.windows):
            logits = self.window_logits(hidden)[:, 0]  # [B, s2, K]
            k = min(top_k, self.codebook)
            top, index = logits.topk(k, dim=-1)
            probs = torch.softmax(top, -1).view(-1, k)
            picked = index.view(-1, k).gather(1, torch.multinomial(probs, 1, generator=generator))
            window = picked.view(b, self.s, self.s)
            codes.append(window.view(b, 1, self.s * self.s))
            if step + 1 < self.windows:
                hidden = self.decode(self.image_tokens(window), caches, bias)
        return window_split(torch.cat(codes, 1), self.grid, self.grid, self.s)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--mlp", type=int, default=344)
    parser.add_argument("--text-vocab", type=int, default=512)
    parser.add_argument("--codebook", type=int, default=256)
    parser.add_argument("--max-text-len", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--grid", type=int, default=16)
    parser.add_argument("--windows", default="1,2,4")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--text-len", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    torch.manual_seed(0)
    g = args.grid
    codes = torch.randint(0, args.codebook, (args.batch_size, g, g))
    texts = torch.randint(0, args.text_vocab, (args.batch_size, args.text_len))
    bos, boi = args.text_vocab, args.text_vocab + 2  # which specials they are does not change the cost
    prompt = torch.cat([torch.full((args.batch_size, 1), bos), texts, torch.full((args.batch_size, 1), boi)], 1)
    windows = [int(s) for s in args.windows.split(",")]
    models, optimizers = [], []
    for s in windows:
        model = TokenShuffleLm(args.text_vocab, args.codebook, g, args.max_text_len, args.d, args.layers, args.heads,
                               args.mlp, s, args.blocks)
        models.append(model)
        optimizers.append(torch.optim.AdamW(model.parameters(), lr=1e-4))
    train_ms = [[] for _ in windows]
    generate_ms = [[] for _ in windows]
    generator = torch.Generator().manual_seed(0)
    for repetition in range(args.warmup + args.repeats):
        for i, model in enumerate(models):
            start = time.perf_counter()
            optimizers[i].zero_grad(set_to_none=True)
            model.loss(prompt, codes).backward()
            optimizers[i].step()
            train = (time.perf_counter() - start) * 1e3
            start = time.perf_counter()
            model.generate(prompt[:1], generator)
            generate = (time.perf_counter() - start) * 1e3
            if repetition >= args.warmup:
                train_ms[i].append(train)
                generate_ms[i].append(generate)
    for i, s in enumerate(windows):
        print(json.dumps({
            "peer": "pytorch", "torch": torch.__version__, "threads": torch.get_num_threads(), "window": s,
            "parameters": sum(p.numel() for p in models[i].parameters()),
            "train_ms": train_ms[i], "generate_ms": generate_ms[i],
        }))


if __name__ == "__main__":
    main()
