#!/usr/bin/env python
"""Regenerate the small real ONNX fixture models used by the onnxprune tests.

Every architecture is a small hand-written PyTorch network (no torchvision).
Each one is exported twice into ``models/``:

* ``<arch>.ts.onnx``     -- TorchScript exporter (``dynamo=False``, opset 13)
* ``<arch>.dynamo.onnx`` -- dynamo exporter (``dynamo=True``, default opset,
  self-contained, i.e. ``external_data=False``)

Both have a single input named ``input`` with a symbolic batch dimension.
Every file is validated with ``onnx.checker`` (full check) and with ONNX
Runtime at batch 1 and batch 3 against PyTorch.  ``models/MANIFEST.json``
describes every file, ``models/zero_channels.json`` lists the exactly-dead
channels of the ``zero_channels`` model and ``models/fashion_mnist_test.npz``
holds 2000 Fashion-MNIST test images for the trained ``fashion_mnist`` model.

Usage::

    python tools/export_fixtures.py [--only resnet,unet] [--out-dir models]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gzip
import io
import json
import logging
import random
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT_DIR = ROOT / "models"
SEED = 0
TS_OPSET = 13
EXPORT_BATCH = 2  # example batch used for tracing (avoids 0/1 specialisation)
CHECK_BATCHES = (1, 3)
REL_TOL = 1e-4
GPT_LENGTH = 32  # the gpt fixture's position table: its inputs have up to this many tokens

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530
FASHION_NPZ_COUNT = 2000


# --------------------------------------------------------------------------
# Shared building blocks
# --------------------------------------------------------------------------


def conv_bn(
    cin: int,
    cout: int,
    k: int = 3,
    stride: int = 1,
    groups: int = 1,
    act: Callable[[], nn.Module] | None = nn.ReLU,
) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm -> optional activation; BN folds on export."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """ResNet basic block with identity or 1x1-stride-2 downsample shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(cin, cout, 3, stride), conv_bn(cout, cout, 3, act=None)
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = conv_bn(cin, cout, 1, stride, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


# --------------------------------------------------------------------------
# Architectures
# --------------------------------------------------------------------------


class ResNet(nn.Module):
    """Small ResNet: stem, identity + downsample blocks, 2x2 pool, Flatten->Linear.

    32-64-128 channels: with ONNX Runtime's 16-channel conv blocks (AVX-512), a narrower net has too
    few multiples of 16 per layer for its latency to follow its MACs.
    """

    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.stem = conv_bn(3, width)
        self.layer1 = nn.Sequential(BasicBlock(width, width), BasicBlock(width, width))
        self.layer2 = nn.Sequential(BasicBlock(width, 2 * width, 2), BasicBlock(2 * width, 2 * width))
        self.layer3 = nn.Sequential(BasicBlock(2 * width, 4 * width, 2))
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(4 * width * 2 * 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear project."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn(cin, hidden, 1, act=nn.ReLU6))
        layers += [
            conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            conv_bn(hidden, cout, 1, act=None),
        ]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_residual else y


class MobileNetV2(nn.Module):
    """Tiny MobileNetV2 with ReLU6 (Clip), residual IR blocks, GAP, Linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(3, 16, 3, 2, act=nn.ReLU6),
            InvertedResidual(16, 16, 1, 1),
            InvertedResidual(16, 24, 2, 3),
            InvertedResidual(24, 24, 1, 3),
            InvertedResidual(24, 32, 2, 3),
            InvertedResidual(32, 32, 1, 3),
            conv_bn(32, 64, 1, act=nn.ReLU6),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    """ShuffleNet's shuffle: view the channels as [groups, C / groups], swap the two, flatten back."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit: stride 1 splits the channels in halves and transforms one; stride 2 transforms
    the whole input twice (a depthwise branch and a 1x1-depthwise-1x1 branch); both concatenate and shuffle."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        branch_in = cin if stride == 2 else half
        if stride == 2:
            self.left = nn.Sequential(conv_bn(cin, cin, 3, 2, groups=cin, act=None), conv_bn(cin, half, 1))
        self.right = nn.Sequential(conv_bn(branch_in, half, 1), conv_bn(half, half, 3, stride, groups=half, act=None),
                                   conv_bn(half, half, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            out = torch.cat([self.left(x), self.right(x)], 1)
        else:
            kept, transformed = x.chunk(2, 1)
            out = torch.cat([kept, self.right(transformed)], 1)
        return channel_shuffle(out)


class ShuffleNet(nn.Module):
    """Tiny ShuffleNetV2: stem, two stages of shuffle units, 1x1 conv, GAP, Linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 24, 3, 2)
        self.stages = nn.Sequential(ShuffleUnit(24, 48, 2), ShuffleUnit(48, 48, 1),
                                    ShuffleUnit(48, 96, 2), ShuffleUnit(96, 96, 1))
        self.head = conv_bn(96, 128, 1)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head(self.stages(self.stem(x))).mean((2, 3)))


class SqueezeExcite(nn.Module):
    """SE block: GAP -> 1x1 conv -> ReLU -> 1x1 conv -> Hardsigmoid -> scale."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        squeezed = max(8, channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.hardsigmoid(self.fc2(F.relu(self.fc1(self.pool(x)))))
        return x * s


class SEHardswish(nn.Module):
    """MobileNetV3-ish net: Hardswish convs, SE blocks, one depthwise conv."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2, act=nn.Hardswish)
        self.se1 = SqueezeExcite(16)
        self.expand = conv_bn(16, 48, 1, act=nn.Hardswish)
        self.dw = conv_bn(48, 48, 3, 2, groups=48, act=nn.Hardswish)
        self.se2 = SqueezeExcite(48)
        self.project = conv_bn(48, 32, 1, act=None)
        self.head = conv_bn(32, 64, 1, act=nn.Hardswish)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.expand(self.se1(self.stem(x)))
        x = self.project(self.se2(self.dw(x)))
        return self.fc(torch.flatten(self.pool(self.head(x)), 1))


class InceptionBlock(nn.Module):
    """Parallel 1x1 / 1x1->3x3 / maxpool->1x1 branches concatenated on C."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.b1 = conv_bn(cin, 8, 1)
        self.b2 = nn.Sequential(conv_bn(cin, 12, 1), conv_bn(12, 16, 3))
        self.b3 = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn(cin, 8, 1))
        self.out_channels = 8 + 16 + 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x)], 1)


class DenseLayer(nn.Module):
    """DenseNet-style layer: x -> cat([x, f(x)], 1)."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.f = nn.Sequential(conv_bn(cin, 16, 1), conv_bn(16, growth, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.f(x)], 1)


class ConcatNet(nn.Module):
    """Inception block + two dense layers, transition conv, GAP, Linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2)
        self.inception = InceptionBlock(16)
        c = self.inception.out_channels
        self.dense1 = DenseLayer(c, 8)
        self.dense2 = DenseLayer(c + 8, 8)
        self.transition = conv_bn(c + 16, 48, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(48, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dense2(self.dense1(self.inception(self.stem(x))))
        return self.fc(torch.flatten(self.pool(self.transition(x)), 1))


def conv_silu(cin: int, cout: int, k: int = 1, stride: int = 1) -> nn.Sequential:
    """YOLOv8 ``Conv``: conv -> BN -> SiLU."""
    return conv_bn(cin, cout, k, stride, act=nn.SiLU)


class YoloBottleneck(nn.Module):
    """Two 3x3 conv_silu with a residual connection."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.cv1 = conv_silu(c, c, 3)
        self.cv2 = conv_silu(c, c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.cv2(self.cv1(x))


class C2f(nn.Module):
    """YOLOv8 C2f: 1x1 conv, split in halves, bottlenecks on last half, cat, 1x1."""

    def __init__(self, cin: int, cout: int, n: int = 1, use_chunk: bool = False) -> None:
        super().__init__()
        self.c = cout // 2
        self.use_chunk = use_chunk
        self.cv1 = conv_silu(cin, 2 * self.c)
        self.m = nn.ModuleList(YoloBottleneck(self.c) for _ in range(n))
        self.cv2 = conv_silu((2 + n) * self.c, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv1(x)
        parts = list(y.chunk(2, 1) if self.use_chunk else y.split((self.c, self.c), 1))
        parts.extend(m(parts[-1]) for m in self.m)
        return self.cv2(torch.cat(parts, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): three chained 5x5 maxpools, cat, 1x1."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        hidden = cin // 2
        self.cv1 = conv_silu(cin, hidden)
        self.pool = nn.MaxPool2d(5, 1, 2)
        self.cv2 = conv_silu(hidden * 4, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.pool(x)
        y2 = self.pool(y1)
        return self.cv2(torch.cat([x, y1, y2, self.pool(y2)], 1))


class Yolo(nn.Module):
    """YOLOv8-ish: C2f backbone, SPPF, small FPN, detection maps at two scales."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        no = 5 + num_classes
        self.stem = conv_silu(3, 16, 3, 2)  # 16x16
        self.down1 = conv_silu(16, 32, 3, 2)  # 8x8
        self.c2f1 = C2f(32, 32, n=1)
        self.down2 = conv_silu(32, 64, 3, 2)  # 4x4
        self.c2f2 = C2f(64, 64, n=2, use_chunk=True)
        self.sppf = SPPF(64, 64)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.c2f3 = C2f(64 + 32, 32, n=1)
        self.head_p3 = nn.Sequential(conv_silu(32, 32, 3), nn.Conv2d(32, no, 1))
        self.head_p4 = nn.Sequential(conv_silu(64, 32, 3), nn.Conv2d(32, no, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p3 = self.c2f1(self.down1(self.stem(x)))
        p4 = self.sppf(self.c2f2(self.down2(p3)))
        p3 = self.c2f3(torch.cat([self.up(p4), p3], 1))
        return self.head_p3(p3), self.head_p4(p4)


class UNet(nn.Module):
    """Tiny U-Net: MaxPool encoder, ConvTranspose + nearest Upsample decoder."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(conv_bn(3, 16), conv_bn(16, 16))  # 32x32
        self.enc2 = nn.Sequential(conv_bn(16, 32), conv_bn(32, 32))  # 16x16
        self.bottom = nn.Sequential(conv_bn(32, 64), conv_bn(64, 64))  # 8x8
        self.pool = nn.MaxPool2d(2)
        self.up1 = nn.ConvTranspose2d(64, 32, 2, stride=2)
        self.dec1 = conv_bn(64, 32)
        self.up2 = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec2 = conv_bn(32 + 16, 16)
        self.out = nn.Conv2d(16, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        b = self.bottom(self.pool(e2))
        d1 = self.dec1(torch.cat([self.up1(b), e2], 1))
        d2 = self.dec2(torch.cat([self.up2(d1), e1], 1))
        return self.out(d2)


class BNKeep(nn.Module):
    """BatchNorm that cannot be folded (after Add / ReLU+MaxPool), InstanceNorm, PReLU."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)  # folded BN
        self.conv1 = nn.Conv2d(16, 16, 3, padding=1)
        self.bn_after_add = nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(2)
        self.bn_after_pool = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.inorm = nn.InstanceNorm2d(32, affine=True)
        self.prelu = nn.PReLU(num_parameters=32)
        self.conv3 = nn.Conv2d(32, 48, 3, stride=2, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(48, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.relu(self.bn_after_add(x + self.conv1(x)))
        x = self.bn_after_pool(self.pool(x))
        x = self.prelu(self.inorm(self.conv2(x)))
        x = F.relu(self.conv3(x))
        return self.fc(torch.flatten(self.gap(x), 1))


class ZeroChannels(nn.Module):
    """conv-relu-conv-relu-conv-GAP-linear (no BN, so zeros stay exact)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(32, 32, 3, stride=2, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.fc(torch.flatten(self.gap(F.relu(self.conv3(x))), 1))


# (producer, consumer, dead output channels of producer)
ZERO_CHANNEL_LAYERS: tuple[tuple[str, str, tuple[int, ...]], ...] = (
    ("conv1", "conv2", (2, 5, 11)),
    ("conv2", "conv3", (0, 7, 8, 19, 30)),
)


class FashionNet(nn.Module):
    """Small Fashion-MNIST CNN: BN convs, one residual block, Flatten->Linear head."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(1, 16)  # 28x28
        self.down1 = conv_bn(16, 32, 3, 2)  # 14x14
        self.block = BasicBlock(32, 32)
        self.down2 = conv_bn(32, 64, 3, 2)  # 7x7
        self.pool = nn.MaxPool2d(2)  # 3x3
        self.fc1 = nn.Linear(64 * 3 * 3, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.down2(self.block(self.down1(self.stem(x)))))
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


class CRNN(nn.Module):
    """Fashion-MNIST read column by column, as an OCR recogniser reads a line of text: two BN convs, then
    each of the 7 columns of the feature map (channels x height) is one step of a bidirectional LSTM,
    whose outputs are averaged over the steps and classified."""

    def __init__(self, num_classes: int = 10, hidden: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(conv_bn(1, 16), nn.MaxPool2d(2), conv_bn(16, 32), nn.MaxPool2d(2))  # 7x7
        self.rnn = nn.LSTM(32 * 7, hidden, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        columns = self.features(x).permute(3, 0, 1, 2).flatten(2)  # [7 steps, N, 32 channels x 7 rows]
        steps, _ = self.rnn(columns)
        return self.fc(steps.mean(0))


# --------------------------------------------------------------------------
# Parameter initialisation helpers
# --------------------------------------------------------------------------


@torch.no_grad()
class Attention(nn.Module):
    """Multi-head self-attention written out (qkv Linear, per-head softmax(q k^T) v, output Linear), as
    timm and Hugging Face models export it, rather than through scaled_dot_product_attention."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attention = ((q @ k.transpose(-2, -1)) * self.scale).softmax(-1)
        return self.proj((attention @ v).transpose(1, 2).reshape(b, n, c))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: LayerNorm -> attention, LayerNorm -> Linear -> GELU -> Linear, residuals."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1, self.attention = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Tiny vision transformer: 4x4 patch conv, position embedding, two blocks, mean of tokens, Linear."""

    def __init__(self, dim: int = 48, heads: int = 3, hidden: int = 96, depth: int = 2) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, 4)
        self.position = nn.Parameter(torch.randn(1, 64, dim) * 0.1)
        self.blocks = nn.Sequential(*[TransformerBlock(dim, heads, hidden) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2) + self.position
        return self.head(self.norm(self.blocks(x)).mean(1))


class MhaBlock(nn.Module):
    """Pre-norm transformer block whose attention is ``nn.MultiheadAttention`` (as torchvision's ViT)."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1, self.attention = nn.LayerNorm(dim), nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attention(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class ViTMha(ViT):
    """The ViT fixture with ``nn.MultiheadAttention`` blocks (3 heads of 16)."""

    def __init__(self, dim: int = 48, heads: int = 3, hidden: int = 96, depth: int = 2) -> None:
        super().__init__(dim, heads, hidden, depth)
        self.blocks = nn.Sequential(*[MhaBlock(dim, heads, hidden) for _ in range(depth)])


class CausalAttention(nn.Module):
    """Causal multi-head self-attention through ``scaled_dot_product_attention``, as Hugging Face models
    run it by default (separate q, k, v Linears)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = (layer(x).view(b, n, self.heads, c // self.heads).transpose(1, 2) for layer in (self.q, self.k, self.v))
        return self.proj(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, n, c))


class GptBlock(TransformerBlock):
    """TransformerBlock with causal attention through ``scaled_dot_product_attention``."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__(dim, heads, hidden)
        self.attention = CausalAttention(dim, heads)


class Gpt(nn.Module):
    """Tiny GPT-like token model: token embedding plus a position table sliced to the input length, two
    causal blocks, next-token logits. Input: int64 token ids [batch, length], length up to 32."""

    def __init__(self, vocab: int = 64, dim: int = 48, heads: int = 3, hidden: int = 96, depth: int = 2) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, dim)
        self.position = nn.Parameter(torch.randn(1, GPT_LENGTH, dim) * 0.1)
        self.blocks = nn.Sequential(*[GptBlock(dim, heads, hidden) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tokens(ids) + self.position[:, :ids.shape[1]]
        return self.head(self.norm(self.blocks(x)))


@torch.no_grad()
def randomize_norm_params(model: nn.Module, gen: torch.Generator) -> None:
    """Give BN/InstanceNorm/PReLU non-trivial values so folding is exercised."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(0.2 * torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(0.5 + 1.5 * torch.rand(m.num_features, generator=gen))
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.InstanceNorm2d)) and m.affine:
            m.weight.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.bias.copy_(0.2 * torch.randn(m.num_features, generator=gen))
        if isinstance(m, nn.PReLU):
            m.weight.copy_(0.05 + 0.3 * torch.rand(m.weight.shape, generator=gen))


@torch.no_grad()
def kill_channels(model: ZeroChannels) -> None:
    """Zero producer weights+bias and consumer input weights of dead channels."""
    for producer, consumer, channels in ZERO_CHANNEL_LAYERS:
        idx = torch.tensor(channels)
        prod: nn.Conv2d = getattr(model, producer)
        cons: nn.Conv2d = getattr(model, consumer)
        prod.weight[idx] = 0.0
        prod.bias[idx] = 0.0
        cons.weight[:, idx] = 0.0


# --------------------------------------------------------------------------
# Fashion-MNIST training
# --------------------------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped idx file (images or labels) into a numpy array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (uint8 images [N,28,28], int64 labels [N]) for 'train' or 't10k'."""
    images = read_idx(FASHION_DIR / f"{split}-images-idx3-ubyte.gz")
    labels = read_idx(FASHION_DIR / f"{split}-labels-idx1-ubyte.gz").astype(np.int64)
    return images, labels


def normalize_fashion(images: np.ndarray) -> torch.Tensor:
    """uint8 [N,28,28] -> normalised float32 [N,1,28,28]."""
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    return ((x - FASHION_MEAN) / FASHION_STD).unsqueeze(1)


def train_fashion(model: nn.Module, epochs: int = 3, batch_size: int = 128) -> None:
    """Train with Adam + one-cycle LR on the full Fashion-MNIST training set."""
    images, labels = load_fashion("train")
    x_all, y_all = normalize_fashion(images), torch.from_numpy(labels)
    steps_per_epoch = (len(x_all) + batch_size - 1) // batch_size
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=3e-3, total_steps=epochs * steps_per_epoch
    )
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for epoch in range(epochs):
        start, total_loss = time.time(), 0.0
        perm = torch.randperm(len(x_all), generator=gen)
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item()
        print(f"  epoch {epoch + 1}: loss {total_loss / steps_per_epoch:.4f} "
              f"({time.time() - start:.0f}s)")
    model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of a PyTorch model."""
    preds = torch.cat([model(xb).argmax(1) for xb in x.split(1000)])
    return int((preds == y).sum()) / len(y)


# --------------------------------------------------------------------------
# Fixture registry
# --------------------------------------------------------------------------


@dataclass
class Fixture:
    """A model ready for export plus metadata for the manifest."""

    name: str
    model: nn.Module
    input_shape: tuple[int, ...]  # without batch
    output_names: list[str]
    extra: dict[str, Any] = field(default_factory=dict)
    check_input: Callable[[int], torch.Tensor] | None = None  # inputs of a batch (default: normal floats)
    sequence: bool = False  # axis 1 of the input and outputs is a symbolic length too
    ts_opset: int = TS_OPSET

    def example(self, batch: int) -> torch.Tensor:
        """Inputs of ``batch`` samples, for export."""
        return self.check_input(batch) if self.check_input else torch.randn(batch, *self.input_shape)

    def axes(self) -> dict[int, str]:
        """The input's and outputs' symbolic axes."""
        return {0: "batch", 1: "length"} if self.sequence else {0: "batch"}


def random_fixture(name: str, model: nn.Module, outputs: list[str] | None = None, size: int = 32) -> Fixture:
    """Wrap a randomly initialised 3 x size x size model with randomised norm params."""
    randomize_norm_params(model, torch.Generator().manual_seed(SEED))
    return Fixture(name, model.eval(), (3, size, size), outputs or ["output"])


def make_zero_channels() -> Fixture:
    """ZeroChannels with exactly dead channels."""
    model = ZeroChannels()
    kill_channels(model)
    extra = {"zero_channels_spec": "zero_channels.json"}
    return Fixture("zero_channels", model.eval(), (3, 32, 32), ["output"], extra)


def make_fashion_mnist(out_dir: Path) -> Fixture:
    """Train FashionNet, save the test subset npz and record accuracies."""
    model = FashionNet()
    t0 = time.time()
    train_fashion(model)
    train_seconds = time.time() - t0
    images, labels = load_fashion("t10k")
    x_test, y_test = normalize_fashion(images), torch.from_numpy(labels)
    n = FASHION_NPZ_COUNT
    np.savez_compressed(out_dir / "fashion_mnist_test.npz", x=images[:n], labels=labels[:n])
    extra = {
        "test_accuracy_10k": accuracy(model, x_test, y_test),
        f"test_accuracy_first{n}": accuracy(model, x_test[:n], y_test[:n]),
        "normalization": {"mean": FASHION_MEAN, "std": FASHION_STD,
                          "formula": "(x/255 - mean) / std"},
        "test_subset": "fashion_mnist_test.npz",
    }
    print(f"  fashion_mnist: trained in {train_seconds:.0f}s, accuracy "
          f"10k={extra['test_accuracy_10k']:.4f} first{n}={extra[f'test_accuracy_first{n}']:.4f}")
    fixture = Fixture("fashion_mnist", model, (1, 28, 28), ["output"], extra)
    fixture.check_input = lambda b: x_test[:b].clone()
    return fixture


def make_crnn() -> Fixture:
    """Train the CRNN on Fashion-MNIST and record its accuracy."""
    model = CRNN()
    t0 = time.time()
    train_fashion(model)
    train_seconds = time.time() - t0
    images, labels = load_fashion("t10k")
    extra = {"test_accuracy_10k": accuracy(model, normalize_fashion(images), torch.from_numpy(labels)),
             "normalization": {"mean": FASHION_MEAN, "std": FASHION_STD, "formula": "(x/255 - mean) / std"}}
    print(f"  crnn: trained in {train_seconds:.0f}s, accuracy 10k={extra['test_accuracy_10k']:.4f}")
    return Fixture("crnn", model, (1, 28, 28), ["output"], extra)


def make_gpt() -> Fixture:
    """Gpt with random weights; its inputs are token ids of 16 tokens (the export's length is symbolic)."""
    gen = torch.Generator().manual_seed(SEED + 2)
    fixture = Fixture("gpt", Gpt().eval(), (16,), ["output"], sequence=True, ts_opset=14)  # SDPA: opset 14
    fixture.check_input = lambda b: torch.randint(0, 64, (b, 16), generator=gen)
    return fixture


def build_fixture(name: str, out_dir: Path) -> Fixture:
    """Construct (and seed) the fixture called ``name``."""
    seed_everything()
    builders: dict[str, Callable[[], Fixture]] = {
        "resnet": lambda: random_fixture("resnet", ResNet()),
        # 128x128: at 32x32 its whole inference takes 0.06 ms, which ONNX Runtime's per-node overhead
        # dominates, so no channel pruning could show in its latency.
        "mobilenetv2": lambda: random_fixture("mobilenetv2", MobileNetV2(), size=128),
        "se_hardswish": lambda: random_fixture("se_hardswish", SEHardswish()),
        "concat_net": lambda: random_fixture("concat_net", ConcatNet()),
        "yolo": lambda: random_fixture("yolo", Yolo(), ["p3", "p4"]),
        "unet": lambda: random_fixture("unet", UNet()),
        "bn_keep": lambda: random_fixture("bn_keep", BNKeep()),
        "shufflenet": lambda: random_fixture("shufflenet", ShuffleNet()),
        "vit": lambda: random_fixture("vit", ViT()),
        "gpt": make_gpt,
        "vit_mha": lambda: replace(random_fixture("vit_mha", ViTMha()), ts_opset=14),  # its attention: SDPA
        "zero_channels": make_zero_channels,
        "fashion_mnist": lambda: make_fashion_mnist(out_dir),
        "crnn": make_crnn,
    }
    return builders[name]()


ARCHS = ("resnet", "mobilenetv2", "se_hardswish", "concat_net", "yolo", "unet",
         "bn_keep", "shufflenet", "vit", "vit_mha", "gpt", "zero_channels", "fashion_mnist", "crnn")


def seed_everything(seed: int = SEED) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------


def export_torchscript(fx: Fixture, path: Path) -> None:
    """Export with the legacy TorchScript exporter (opset 13 unless the fixture needs more, dynamic_axes)."""
    example = fx.example(EXPORT_BATCH)
    axes = {name: fx.axes() for name in ["input", *fx.output_names]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            fx.model, (example,), str(path), dynamo=False, opset_version=fx.ts_opset,
            input_names=["input"], output_names=fx.output_names, dynamic_axes=axes,
            do_constant_folding=True,
        )


def export_dynamo(fx: Fixture, path: Path) -> None:
    """Export with the dynamo exporter (default opset, self-contained file)."""
    example = fx.example(EXPORT_BATCH)
    batch = torch.export.Dim("batch", min=1, max=1024)
    shapes = {0: batch, 1: torch.export.Dim("length", min=1, max=GPT_LENGTH)} if fx.sequence else {0: batch}
    # The exporter logs "torchvision is not installed" warnings and progress lines.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    quiet = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            fx.model, (example,), str(path), dynamo=True, external_data=False,
            input_names=["input"], output_names=fx.output_names,
            dynamic_shapes=(shapes,), optimize=True, verbose=False,
        )
    strip_stack_traces(path)


def strip_stack_traces(path: Path) -> None:
    """Drop per-node Python stack traces (absolute paths, line numbers) so that
    re-exports are byte-identical; all other dynamo metadata is kept."""
    model = onnx.load(str(path))
    for node in model.graph.node:
        kept = [p for p in node.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
    onnx.save(model, str(path))


EXPORTERS: dict[str, Callable[[Fixture, Path], None]] = {
    "ts": export_torchscript,
    "dynamo": export_dynamo,
}


# --------------------------------------------------------------------------
# Verification and manifest
# --------------------------------------------------------------------------


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    """Count op types in the main graph (sorted by name)."""
    counts = collections.Counter(node.op_type for node in model.graph.node)
    return dict(sorted(counts.items()))


def value_info_shape(vi: onnx.ValueInfoProto) -> list[int | str]:
    """Shape of a graph input/output with symbolic dims as strings."""
    dims = vi.type.tensor_type.shape.dim
    return [d.dim_param if d.HasField("dim_param") else d.dim_value for d in dims]


def default_opset(model: onnx.ModelProto) -> int:
    """Version of the default ('' / ai.onnx) opset."""
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def max_relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |a - e| / max |e| (scale-relative error)."""
    scale = max(float(np.abs(expected).max()), 1e-6)
    return float(np.abs(actual - expected).max()) / scale


def check_with_ort(fx: Fixture, path: Path) -> dict[str, float]:
    """Run ORT at each check batch size, compare to PyTorch, return max rel errors."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(SEED + 1)
    errors: dict[str, float] = {}
    for batch in CHECK_BATCHES:
        x = (fx.check_input(batch) if fx.check_input
             else torch.randn(batch, *fx.input_shape, generator=gen))
        with torch.no_grad():
            ref = fx.model(x)
        refs = [ref] if isinstance(ref, torch.Tensor) else list(ref)
        outs = sess.run(fx.output_names, {"input": x.numpy()})
        err = max(max_relative_error(o, r.numpy()) for o, r in zip(outs, refs))
        for o, r in zip(outs, refs):
            assert o.shape == tuple(r.shape), f"{path.name}: shape {o.shape} != {r.shape}"
        assert err <= REL_TOL, f"{path.name}: batch {batch} rel err {err:.2e} > {REL_TOL}"
        errors[f"batch{batch}"] = err
    return errors


def initializer_stats(model: onnx.ModelProto) -> dict[str, int]:
    """Number of initializers, their total elements, and Constant node count."""
    elems = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    consts = sum(n.op_type == "Constant" for n in model.graph.node)
    return {"initializers": len(model.graph.initializer),
            "initializer_elements": elems, "constant_nodes": consts}


def ort_accuracy(path: Path, n: int) -> float:
    """Accuracy of an exported Fashion-MNIST model on the first ``n`` test images."""
    images, labels = load_fashion("t10k")
    x = normalize_fashion(images[:n]).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"input": x})[0]
    return int((logits.argmax(1) == labels[:n]).sum()) / n


def describe(fx: Fixture, exporter: str, path: Path) -> dict[str, Any]:
    """Validate one exported file and build its manifest entry."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert not model.functions, f"{path.name}: unexpected local functions"
    entry: dict[str, Any] = {
        "arch": fx.name,
        "exporter": "torchscript" if exporter == "ts" else "dynamo",
        "opset": default_opset(model),
        "file_bytes": path.stat().st_size,
        "inputs": [{"name": i.name, "shape": value_info_shape(i)} for i in model.graph.input],
        "outputs": [{"name": o.name, "shape": value_info_shape(o)} for o in model.graph.output],
        "op_histogram": op_histogram(model),
        "num_parameters": sum(p.numel() for p in fx.model.parameters()),
        **initializer_stats(model),
        "max_rel_err_vs_torch": check_with_ort(fx, path),
    }
    entry.update(fx.extra)
    if fx.name == "fashion_mnist":
        entry[f"onnxruntime_accuracy_first{FASHION_NPZ_COUNT}"] = ort_accuracy(path, FASHION_NPZ_COUNT)
    return entry


def find_initializer(model: onnx.ModelProto, array: np.ndarray) -> str | None:
    """Name of the initializer whose value equals ``array`` exactly."""
    for init in model.graph.initializer:
        if tuple(init.dims) == array.shape:
            if np.array_equal(onnx.numpy_helper.to_array(init), array):
                return init.name
    return None


def write_zero_channels_json(fx: Fixture, files: dict[str, Path], out_dir: Path) -> None:
    """Describe the dead channels of the zero_channels model."""
    layers = []
    for producer, consumer, channels in ZERO_CHANNEL_LAYERS:
        prod: nn.Conv2d = getattr(fx.model, producer)
        cons: nn.Conv2d = getattr(fx.model, consumer)
        names: dict[str, dict[str, str | None]] = {}
        for path in files.values():
            model = onnx.load(str(path))
            names[path.name] = {
                "producer_weight": find_initializer(model, prod.weight.detach().numpy()),
                "producer_bias": find_initializer(model, prod.bias.detach().numpy()),
                "consumer_weight": find_initializer(model, cons.weight.detach().numpy()),
            }
        layers.append({
            "layer": producer,
            "consumer": consumer,
            "out_channels": prod.out_channels,
            "num_zero_channels": len(channels),
            "zero_channel_indices": list(channels),
            "zero_fraction": len(channels) / prod.out_channels,
            "onnx_initializers": names,
        })
    doc = {
        "description": "Output channels whose producer conv weight+bias are exactly 0 "
                       "and whose consumer conv input weights are exactly 0.",
        "files": sorted(p.name for p in files.values()),
        "layers": layers,
    }
    (out_dir / "zero_channels.json").write_text(json.dumps(doc, indent=2) + "\n")


def print_op_table(manifest: dict[str, dict[str, Any]]) -> None:
    """Print op-type histograms, one row per exported file."""
    width = max(len(name) for name in manifest)
    print("\nOp types per model")
    print("-" * 100)
    for name, entry in manifest.items():
        ops = ", ".join(f"{op}:{n}" for op, n in entry["op_histogram"].items())
        print(f"{name:<{width}}  {ops}")
    print("-" * 100)


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------


def export_fixture(name: str, out_dir: Path) -> dict[str, dict[str, Any]]:
    """Build, export (both exporters) and validate one architecture."""
    print(f"[{name}]")
    fx = build_fixture(name, out_dir)
    entries: dict[str, dict[str, Any]] = {}
    files: dict[str, Path] = {}
    for exporter, export in EXPORTERS.items():
        path = out_dir / f"{name}.{exporter}.onnx"
        export(fx, path)
        entries[path.name] = describe(fx, exporter, path)
        files[exporter] = path
        errs = entries[path.name]["max_rel_err_vs_torch"]
        print(f"  {path.name}: {path.stat().st_size / 1024:.0f} KiB, "
              f"opset {entries[path.name]['opset']}, rel err "
              + ", ".join(f"{k}={v:.1e}" for k, v in errs.items()))
    if name == "zero_channels":
        write_zero_channels_json(fx, files, out_dir)
    return entries


def update_manifest(out_dir: Path, entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Merge new entries into MANIFEST.json (so ``--only`` keeps the rest)."""
    path = out_dir / "MANIFEST.json"
    manifest = json.loads(path.read_text()) if path.exists() else {}
    files = manifest.get("files", {})
    files.update(entries)
    manifest = {
        "generator": "tools/export_fixtures.py",
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "seed": SEED,
        "files": dict(sorted(files.items())),
    }
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    parser.add_argument("--only", default=",".join(ARCHS),
                        help="comma-separated subset of: " + ", ".join(ARCHS))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Export every requested fixture and write the manifest."""
    args = parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - set(ARCHS)
    if unknown:
        raise SystemExit(f"unknown architectures: {sorted(unknown)}")
    torch.set_num_threads(2)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    entries: dict[str, dict[str, Any]] = {}
    for name in names:
        entries.update(export_fixture(name, args.out_dir))
    print_op_table(entries)
    update_manifest(args.out_dir, entries)
    total = sum(p.stat().st_size for p in args.out_dir.iterdir() if p.is_file())
    print(f"models/ total: {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
