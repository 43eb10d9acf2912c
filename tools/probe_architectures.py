"""Prune small PyTorch architectures exported by both PyTorch exporters and check them with the masking oracle.

The README's figures for single-head attention (the linear row of the ops table: DANet's position and
channel attention, SAGAN's self-attention, a non-local block, a Keras-style dot-product attention without
heads) and its list of architectures checked by hand (a Swin transformer's window attention with its
relative position bias, a Conformer's convolution module with GLU, a MobileViT block, a small CNN in
PyTorch's channels-last memory format, and text models whose embeddings prune) come from here. The
convolutional blocks sit between a 32-channel stem conv and a classifier head; all have random weights and
BatchNorm statistics; images are 16x16 (32x32 for Swin and MobileViT). Each export is pruned at
``--ratio 0.5 --round-to 1``; the script prints its MACs before and after, whether it meets the masking
oracle, and the groups that prune. ``PROBE_OPSET`` sets the dynamo export's opset (18 by default; from 23
``scaled_dot_product_attention`` becomes ONNX's Attention). Needs PyTorch (and onnxscript for the dynamo
exporter)::

    python tools/probe_architectures.py /tmp/architectures [NAME ...]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from helpers import assert_matches_masked  # noqa: E402

import onnxprune  # noqa: E402
from onnxprune.errors import InputError  # noqa: E402


class PositionAttention(nn.Module):
    """DANet's PAM: energy = query^T key over C/8 channels, the value's C channels mixed by it."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.query, self.key, self.value = nn.Conv2d(c, c // 8, 1), nn.Conv2d(c, c // 8, 1), nn.Conv2d(c, c, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        energy = torch.bmm(self.query(x).view(b, -1, h * w).permute(0, 2, 1), self.key(x).view(b, -1, h * w))
        mixed = torch.bmm(self.value(x).view(b, -1, h * w), F.softmax(energy, dim=-1).permute(0, 2, 1))
        return 0.5 * mixed.view(b, c, h, w) + x


class ChannelAttention(nn.Module):
    """DANet's CAM: energy = X X^T over the positions, [C, C]."""

    def forward(self, x):
        b, c, h, w = x.shape
        energy = torch.bmm(x.view(b, c, -1), x.view(b, c, -1).permute(0, 2, 1))
        attention = F.softmax(energy.max(-1, keepdim=True)[0].expand_as(energy) - energy, dim=-1)
        return 0.5 * torch.bmm(attention, x.view(b, c, -1)).view(b, c, h, w) + x


class SelfAttention(nn.Module):
    """SAGAN's: keys and values max-pooled, C/8 query and key channels, C/2 value channels."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.f, self.g, self.h, self.o = nn.Conv2d(c, c // 8, 1), nn.Conv2d(c, c // 8, 1), nn.Conv2d(c, c // 2, 1), nn.Conv2d(c // 2, c, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        f, g = self.f(x).flatten(2), F.max_pool2d(self.g(x), 2).flatten(2)
        values = F.max_pool2d(self.h(x), 2).flatten(2)
        beta = F.softmax(torch.bmm(f.transpose(1, 2), g), -1)
        return x + 0.5 * self.o(torch.bmm(values, beta.transpose(1, 2)).view(b, c // 2, h, w))


class NonLocal(nn.Module):
    """Wang et al.'s embedded Gaussian block, C/2 inner channels, BatchNorm after its output conv."""

    def __init__(self, c: int) -> None:
        super().__init__()
        inner = c // 2
        self.theta, self.phi, self.g = nn.Conv2d(c, inner, 1), nn.Conv2d(c, inner, 1), nn.Conv2d(c, inner, 1)
        self.out = nn.Sequential(nn.Conv2d(inner, c, 1), nn.BatchNorm2d(c))

    def forward(self, x):
        b, c, h, w = x.shape  # written as the authors' code is (view, contiguous)
        inner = self.g.out_channels
        theta = self.theta(x).view(b, inner, -1).permute(0, 2, 1)
        g = self.g(x).view(b, inner, -1).permute(0, 2, 1)
        weights = F.softmax(torch.matmul(theta, self.phi(x).view(b, inner, -1)), dim=-1)
        return self.out(torch.matmul(weights, g).permute(0, 2, 1).contiguous().view(b, inner, h, w)) + x


class Classifier(nn.Module):
    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.block = block
        self.head = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(32, 10))

    def forward(self, x):
        return self.head(self.block(self.stem(x)))


class SmallCNN(nn.Module):
    """Two convs, global pooling, flatten, a linear layer: probed in PyTorch's channels-last memory format,
    whose flatten the dynamo exporter writes as a Gather of computed indices (``as_strided``)."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1),
                                    nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        return self.layers(x)


class TextCNN(nn.Module):
    """An embedding of 32 (100 tokens), a Conv1d of 24, max over time, a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding, self.conv, self.out = nn.Embedding(100, 32), nn.Conv1d(32, 24, 3, padding=1), nn.Linear(24, 4)

    def forward(self, ids):
        return self.out(torch.relu(self.conv(self.embedding(ids).transpose(1, 2))).amax(-1))


class TextLSTM(nn.Module):
    """An embedding of 32, an LSTM of 20, its last step classified."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding, self.lstm, self.out = nn.Embedding(100, 32), nn.LSTM(32, 20, batch_first=True), nn.Linear(20, 4)

    def forward(self, ids):
        return self.out(self.lstm(self.embedding(ids))[0][:, -1])


class FastText(nn.Module):
    """The mean of the tokens' embeddings of 32, then two linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding, self.hidden, self.out = nn.Embedding(100, 32), nn.Linear(32, 16), nn.Linear(16, 4)

    def forward(self, ids):
        return self.out(torch.relu(self.hidden(self.embedding(ids).mean(1))))


class DotProductAttention(nn.Module):
    """Keras' ``Attention()([q, v])`` on a sequence: softmax(q v^T) v, joined with q."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.v, self.out = nn.Linear(12, 16), nn.Linear(12, 16), nn.Linear(32, 4)

    def forward(self, x):
        q, v = self.q(x), self.v(x)
        return self.out(torch.cat([q, torch.softmax(q @ v.transpose(1, 2), -1) @ v], -1)).mean(1)


class WindowAttention(nn.Module):
    """Swin's: attention within windows of ws x ws tokens, plus a relative position bias per head looked
    up in a learned table."""

    def __init__(self, dim: int, ws: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv, self.proj = nn.Linear(dim, dim * 3), nn.Linear(dim, dim)
        self.table = nn.Parameter(torch.randn((2 * ws - 1) ** 2, heads) * 0.1)
        coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + ws - 1
        self.register_buffer("index", relative[..., 0] * (2 * ws - 1) + relative[..., 1])

    def forward(self, x):
        windows, n, c = x.shape
        q, k, v = self.qkv(x).reshape(windows, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.table[self.index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        attention = ((q * self.scale) @ k.transpose(-2, -1) + bias.unsqueeze(0)).softmax(-1)
        return self.proj((attention @ v).transpose(1, 2).reshape(windows, n, c))


class SwinBlock(nn.Module):
    def __init__(self, dim: int = 32, ws: int = 4, heads: int = 4) -> None:
        super().__init__()
        self.ws, self.norm1, self.attention, self.norm2 = ws, nn.LayerNorm(dim), WindowAttention(dim, ws, heads), nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):  # [N, H, W, C]
        b, h, w, c = x.shape
        ws = self.ws
        windows = self.norm1(x).view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
        mixed = self.attention(windows).view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        x = x + mixed
        return x + self.mlp(self.norm2(x))


class Swin(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.blocks = nn.Conv2d(3, 32, 4, 4), nn.Sequential(SwinBlock(), SwinBlock())
        self.norm, self.head = nn.LayerNorm(32), nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.norm(self.blocks(self.embed(x).permute(0, 2, 3, 1))).mean((1, 2)))


class Conformer(nn.Module):
    """A half-step feed-forward module and a convolution module (pointwise conv to 2d, GLU, depthwise
    conv, BatchNorm, SiLU, pointwise conv) on a sequence of 20 features."""

    def __init__(self, d: int = 32) -> None:
        super().__init__()
        self.inputs = nn.Linear(20, d)
        self.feed_forward = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.SiLU(), nn.Linear(2 * d, d))
        self.norm, self.pointwise1 = nn.LayerNorm(d), nn.Conv1d(d, 2 * d, 1)
        self.depthwise, self.bn, self.pointwise2 = nn.Conv1d(d, d, 7, padding=3, groups=d), nn.BatchNorm1d(d), nn.Conv1d(d, d, 1)
        self.out = nn.Linear(d, 8)

    def forward(self, x):
        x = self.inputs(x)
        x = x + 0.5 * self.feed_forward(x)
        h = F.glu(self.pointwise1(self.norm(x).transpose(1, 2)), dim=1)
        return self.out(x + self.pointwise2(F.silu(self.bn(self.depthwise(h)))).transpose(1, 2))


class MobileViTBlock(nn.Module):
    """Local convs, then a transformer over the 2x2-pixel positions' sequences, folded back and fused."""

    def __init__(self, c: int = 32, d: int = 48, p: int = 2) -> None:
        super().__init__()
        self.p = p
        self.local = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.SiLU(), nn.Conv2d(c, d, 1))
        self.transformer = nn.TransformerEncoderLayer(d, 4, 2 * d, batch_first=True, dropout=0.0)
        self.fuse1, self.fuse2 = nn.Conv2d(d, c, 1), nn.Conv2d(2 * c, c, 3, padding=1)

    def forward(self, x):
        y = self.local(x)
        b, d, h, w = y.shape
        p = self.p
        y = y.reshape(b, d, h // p, p, w // p, p).permute(0, 3, 5, 2, 4, 1).reshape(b * p * p, (h // p) * (w // p), d)
        y = self.transformer(y).reshape(b, p, p, h // p, w // p, d).permute(0, 5, 3, 1, 4, 2).reshape(b, d, h, w)
        return self.fuse2(torch.cat([x, self.fuse1(y)], 1))


class MobileViT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.SiLU())
        self.block, self.head = MobileViTBlock(), nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.block(self.stem(x)).mean((2, 3)))


MODELS = {
    "position_attention": lambda: Classifier(PositionAttention(32)),
    "channel_attention": lambda: Classifier(ChannelAttention()),
    "sagan_attention": lambda: Classifier(SelfAttention(32)),
    "non_local": lambda: Classifier(NonLocal(32)),
    "dot_product_attention": DotProductAttention,
    "swin": Swin,
    "conformer": Conformer,
    "mobilevit": MobileViT,
    "channels_last_cnn": lambda: SmallCNN().to(memory_format=torch.channels_last),
    "text_cnn": TextCNN,
    "text_lstm": TextLSTM,
    "fasttext": FastText,
}
TOKEN_INPUTS = ("text_cnn", "text_lstm", "fasttext")  # token ids [2, 12] of 100
INPUTS = {"dot_product_attention": (2, 10, 12), "conformer": (2, 12, 20), "swin": (2, 3, 32, 32), "mobilevit": (2, 3, 32, 32)}


def main(models: dict = MODELS, token_inputs: tuple[str, ...] = TOKEN_INPUTS, inputs: dict = INPUTS) -> None:
    """Export, prune and check each of ``models`` (those named on the command line, or all): token ids for
    ``token_inputs``, random inputs of the sizes ``inputs`` gives (2 x 3 x 16 x 16 otherwise)."""
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/architectures")
    opset = int(os.environ.get("PROBE_OPSET", 18))  # the dynamo exporter's; from 23 it writes ONNX's Attention
    folder.mkdir(parents=True, exist_ok=True)
    for name, build in models.items():
        if sys.argv[2:] and name not in sys.argv[2:]:
            continue
        torch.manual_seed(0)
        model = build().eval()
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.data.uniform_(0.5, 1.5)
        x = torch.randint(0, 100, (2, 12)) if name in token_inputs else torch.randn(*inputs.get(name, (2, 3, 16, 16)))
        if name == "channels_last_cnn":
            x = x.to(memory_format=torch.channels_last)
        for exporter in ("ts", "dynamo"):
            path = folder / f"{name}.{exporter}.onnx"
            try:
                if exporter == "ts":
                    torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17, input_names=["x"],
                                      output_names=["y"], dynamic_axes={"x": {0: "N"}})
                else:
                    torch.onnx.export(model, (x,), path, dynamo=True, opset_version=opset, input_names=["x"],
                                      output_names=["y"], dynamic_shapes=({0: torch.export.Dim("N", min=2)},))
            except Exception as exc:  # noqa: BLE001 - an exporter's failure is a finding, not the end of the probe
                print(f"{path.stem}: the exporter failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})",
                      flush=True)
                continue
            try:
                result = onnxprune.prune(path, ratio=0.5, round_to=1, latency=False)
            except InputError as exc:  # an export that ONNX Runtime cannot run, say: a finding too
                print(f"{path.stem}: refused ({exc})", flush=True)
                continue
            try:
                assert_matches_masked(onnx.load(path), result.model, result.report)
                oracle = "masking oracle met"
            except AssertionError as exc:
                oracle = f"MASKING ORACLE FAILED ({exc})"
            free = [(g["channels"], g["kept"]) for g in result.report["groups"] if g["pinned_reason"] is None]
            print(f"{path.stem}: MACs {result.original.macs:,} -> {result.pruned.macs:,}; {oracle}; "
                  f"groups pruned (channels, kept): {free}", flush=True)


if __name__ == "__main__":
    main()
