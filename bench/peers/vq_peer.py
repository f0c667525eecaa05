"""PyTorch eager peer of token-shuffle-rs's VQ tokenizer (crates/vqgan), for side-by-side speed.

The same model as `VqModelConfig` (LlamaGen's VQGAN layout), layer by layer: conv_in; per level `res_blocks`
ResNet blocks (GroupNorm + SiLU + 3x3 conv, twice, 1x1 shortcut when the width changes), an attention block after
each at the lowest level, a stride-2 3x3 downsample padded right/bottom; a middle block (ResNet, attention, ResNet);
GroupNorm + SiLU + conv_out to z channels; a 1x1 conv to the code dimension; a cosine codebook (l2-normalised codes
and inputs, nearest by dot product, straight-through); a 1x1 conv back; the mirrored decoder (res_blocks + 1 blocks
per level, nearest 2x upsample + 3x3 conv). The training step is what `cargo xtask bench tokenizer` times: L2
reconstruction + codebook + beta * commitment loss (no GAN, no entropy term: vq-tiny's defaults), AdamW.

Prints one JSON line per resolution: parameters, train_ms, encode_ms, decode_ms (lists, after one warm-up).
"""

import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def norm(groups, c):
    return nn.GroupNorm(groups, c, eps=1e-6)


class Resnet(nn.Module):
    def __init__(self, cin, cout, groups):
        super().__init__()
        self.norm1, self.conv1 = norm(groups, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = norm(groups, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.shortcut is None else self.shortcut(x)) + h


class Attn(nn.Module):
    def __init__(self, c, groups):
        super().__init__()
        self.norm = norm(groups, c)
        self.q, self.k, self.v, self.proj = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        b, c, h, w = x.shape
        y = self.norm(x)
        seq = lambda t: t.reshape(b, 1, c, h * w).transpose(2, 3)
        out = F.scaled_dot_product_attention(seq(self.q(y)), seq(self.k(y)), seq(self.v(y)), scale=c ** -0.5)
        return x + self.proj(out.transpose(2, 3).reshape(b, c, h, w))


class Mid(nn.Module):
    def __init__(self, c, groups):
        super().__init__()
        self.block_1, self.attn_1, self.block_2 = Resnet(c, c, groups), Attn(c, groups), Resnet(c, c, groups)

    def forward(self, x):
        return self.block_2(self.attn_1(self.block_1(x)))


class Down(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Up(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class VqModel(nn.Module):
    def __init__(self, codebook, code_dim, ch, mults, res_blocks, z, groups, beta=0.25):
        super().__init__()
        self.beta = beta
        levels = len(mults)
        enc, block_in = [], ch
        for level, m in enumerate(mults):
            lowest = level + 1 == levels
            for _ in range(res_blocks):
                enc.append(Resnet(block_in, ch * m, groups))
                block_in = ch * m
                if lowest:
                    enc.append(Attn(block_in, groups))
            if not lowest:
                enc.append(Down(block_in))
        self.encoder = nn.Sequential(nn.Conv2d(3, ch, 3, padding=1), *enc, Mid(block_in, groups), norm(groups, block_in), nn.SiLU(),
                                     nn.Conv2d(block_in, z, 3, padding=1))
        self.quant_conv = nn.Conv2d(z, code_dim, 1)
        self.codebook = nn.Embedding(codebook, code_dim)
        self.post_quant_conv = nn.Conv2d(code_dim, z, 1)
        block_in = ch * mults[-1]
        dec = [nn.Conv2d(z, block_in, 3, padding=1), Mid(block_in, groups)]
        for level in reversed(range(levels)):
            lowest = level + 1 == levels
            for _ in range(res_blocks + 1):
                dec.append(Resnet(block_in, ch * mults[level], groups))
                block_in = ch * mults[level]
                if lowest:
                    dec.append(Attn(block_in, groups))
            if level != 0:
                dec.append(Up(block_in))
        self.decoder = nn.Sequential(*dec, norm(groups, block_in), nn.SiLU(), nn.Conv2d(block_in, 3, 3, padding=1))

    def quantize(self, images):
        z = self.quant_conv(self.encoder(images))
        b, c, h, w = z.shape
        z = F.normalize(z.permute(0, 2, 3, 1).reshape(-1, c), dim=1)
        book = F.normalize(self.codebook.weight, dim=1)
        codes = (z @ book.t()).argmax(1)
        chosen = book[codes]
        codebook_loss = (chosen - z.detach()).pow(2).mean()
        commitment = (chosen.detach() - z).pow(2).mean() * self.beta
        vectors = (z + (chosen - z).detach()).reshape(b, h, w, c).permute(0, 3, 1, 2)
        return vectors, codes.reshape(b, h, w), codebook_loss + commitment

    def loss(self, images):
        vectors, _, vq_loss = self.quantize(images)
        reconstruction = self.decoder(self.post_quant_conv(vectors))
        return (reconstruction - images).pow(2).mean() + vq_loss

    @torch.inference_mode()
    def encode(self, images):
        return self.quantize(images)[1]

    @torch.inference_mode()
    def decode(self, codes):
        book = F.normalize(self.codebook.weight, dim=1)
        return self.decoder(self.post_quant_conv(book[codes].permute(0, 3, 1, 2)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/vq-tiny.json", help="a VQ preset file of the repository")
    parser.add_argument("--resolutions", default="64")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with open(args.config) as f:
        c = json.load(f)
    torch.manual_seed(0)
    model = VqModel(c["codebook_size"], c["code_dim"], c["channels"], c["channel_multipliers"], c["res_blocks"],
                    c["z_channels"], c["norm_groups"], c["commitment_beta"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for resolution in [int(r) for r in args.resolutions.split(",")]:
        images = torch.rand(args.batch, 3, resolution, resolution) * 2 - 1
        train, encode, decode = [], [], []
        for repetition in range(args.repeats + 1):
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            model.loss(images).backward()
            optimizer.step()
            trained = time.perf_counter()
            codes = model.encode(images)
            encoded = time.perf_counter()
            model.decode(codes)
            decoded = time.perf_counter()
            if repetition > 0:
                train.append((trained - start) * 1e3)
                encode.append((encoded - trained) * 1e3)
                decode.append((decoded - encoded) * 1e3)
        print(json.dumps({"peer": "pytorch", "torch": torch.__version__, "threads": torch.get_num_threads(),
                          "resolution": resolution, "parameters": sum(p.numel() for p in model.parameters()),
                          "train_ms": train, "encode_ms": encode, "decode_ms": decode}))


if __name__ == "__main__":
    main()
