"""Prune single-head attention blocks exported by both PyTorch exporters and check them with the masking oracle.

The README's figures for attention whose energy multiplies over query and key channels (the linear row of
the ops table) come from here: DANet's position and channel attention, SAGAN's self-attention, a
non-local block (embedded Gaussian) and a Keras-style dot-product attention without heads, each (but the
last) between a 32-channel stem conv and a classifier head, with random weights and BatchNorm statistics,
on 16x16 inputs. Each export is pruned at ``--ratio 0.5 --round-to 1``; the script prints its MACs before
and after, whether it meets the masking oracle, and the groups that prune. Needs PyTorch (and onnxscript
for the dynamo exporter)::

    python tools/probe_attention.py /tmp/attention
"""

from __future__ import annotations

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


class DotProductAttention(nn.Module):
    """Keras' ``Attention()([q, v])`` on a sequence: softmax(q v^T) v, joined with q."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.v, self.out = nn.Linear(12, 16), nn.Linear(12, 16), nn.Linear(32, 4)

    def forward(self, x):
        q, v = self.q(x), self.v(x)
        return self.out(torch.cat([q, torch.softmax(q @ v.transpose(1, 2), -1) @ v], -1)).mean(1)


MODELS = {
    "position_attention": lambda: Classifier(PositionAttention(32)),
    "channel_attention": lambda: Classifier(ChannelAttention()),
    "sagan_attention": lambda: Classifier(SelfAttention(32)),
    "non_local": lambda: Classifier(NonLocal(32)),
    "dot_product_attention": DotProductAttention,
}


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/attention")
    folder.mkdir(parents=True, exist_ok=True)
    for name, build in MODELS.items():
        torch.manual_seed(0)
        model = build().eval()
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.data.uniform_(0.5, 1.5)
        x = torch.randn(2, 10, 12) if name == "dot_product_attention" else torch.randn(2, 3, 16, 16)
        for exporter in ("ts", "dynamo"):
            path = folder / f"{name}.{exporter}.onnx"
            if exporter == "ts":
                torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17, input_names=["x"],
                                  output_names=["y"], dynamic_axes={"x": {0: "N"}})
            else:
                torch.onnx.export(model, (x,), path, dynamo=True, opset_version=18, input_names=["x"],
                                  output_names=["y"], dynamic_shapes=({0: torch.export.Dim("N")},))
            result = onnxprune.prune(path, ratio=0.5, round_to=1, latency=False)
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
