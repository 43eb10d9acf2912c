"""Prune small PyTorch models of today's common families, exported by both PyTorch exporters.

The README's list of model families checked by hand comes from here: a LLaMA-style decoder (RMSNorm,
rotary position embedding, grouped-query attention, SwiGLU), a T5-style encoder (relative position bias
per head, RMSNorm), a Whisper-style encoder (Conv1d stem, pre-norm transformer), a wav2vec 2.0-style
feature extractor (GroupNorm per channel), a TCN (dilated causal Conv1d, chomped by slicing), ConvNeXt,
GhostNet, RegNet (grouped convs), RepVGG (training-time branches), an HRNet-style fusion of two
resolutions, YOLO11 (C3k2, SPPF, C2PSA attention, the Detect head with its DFL box decoding), YOLOv10
(SCDown, C2fCIB with RepVGGDW), RT-DETR's AIFI (a transformer on the top map with a sin-cos position
embedding, back to a map), EfficientNet's MBConv, MLP-Mixer, SegFormer (efficient self-attention, Mix-FFN),
a diffusion U-Net (time embedding added per channel, GroupNorm, self-attention on the map), a DETR decoder
(learned queries expanded to the batch), PoolFormer, DeepLabV3+ (ASPP), a DenseNet block, a Res2Net block,
a detector whose head is shared by its pyramid levels (RetinaNet, FCOS), an Inception block, YOLOv8-seg's
mask head and EfficientViT's linear attention. Random weights and BatchNorm statistics; each is pruned at ``--ratio 0.5
--round-to 1`` and checked with the masking oracle (see ``probe_architectures.py``, whose ``main`` this
runs). Needs PyTorch and onnxscript::

    python tools/probe_families.py /tmp/families [NAME ...]
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from probe_architectures import Classifier, main  # noqa: E402


# ---- transformers -------------------------------------------------------------------------------------
class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.rand(d) + 0.5), eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LlamaBlock(nn.Module):
    """Pre-norm decoder block: 4 query heads sharing 2 key/value heads (repeat_interleave), rotary position
    embedding on q and k, causal mask, SwiGLU MLP of 86."""

    def __init__(self, d: int = 32, heads: int = 4, kv_heads: int = 2, hidden: int = 86, tokens: int = 12) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_size = heads, kv_heads, d // heads
        self.norm1, self.norm2 = RMSNorm(d), RMSNorm(d)
        self.q, self.o = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.k, self.v = nn.Linear(d, kv_heads * self.head_size, bias=False), nn.Linear(d, kv_heads * self.head_size, bias=False)
        self.gate, self.up = nn.Linear(d, hidden, bias=False), nn.Linear(d, hidden, bias=False)
        self.down = nn.Linear(hidden, d, bias=False)
        inverse = 1.0 / (10000 ** (torch.arange(0, self.head_size, 2).float() / self.head_size))
        angles = torch.outer(torch.arange(tokens).float(), inverse)
        angles = torch.cat((angles, angles), -1)
        self.register_buffer("cos", angles.cos())
        self.register_buffer("sin", angles.sin())
        self.register_buffer("mask", torch.full((tokens, tokens), float("-inf")).triu(1))

    def forward(self, x):
        b, t, d = x.shape
        h = self.norm1(x)
        q = self.q(h).view(b, t, self.heads, self.head_size).transpose(1, 2)
        k = self.k(h).view(b, t, self.kv_heads, self.head_size).transpose(1, 2)
        v = self.v(h).view(b, t, self.kv_heads, self.head_size).transpose(1, 2)
        q, k = q * self.cos + rotate_half(q) * self.sin, k * self.cos + rotate_half(k) * self.sin
        repeat = self.heads // self.kv_heads
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        attention = (q @ k.transpose(-2, -1) / math.sqrt(self.head_size) + self.mask).softmax(-1)
        x = x + self.o((attention @ v).transpose(1, 2).reshape(b, t, d))
        h = self.norm2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Llama(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.blocks = nn.Embedding(100, 32), nn.Sequential(LlamaBlock(), LlamaBlock())
        self.norm, self.head = RMSNorm(32), nn.Linear(32, 100, bias=False)

    def forward(self, ids):
        return self.head(self.norm(self.blocks(self.embed(ids))))


class T5Block(nn.Module):
    """4 heads with a learned relative position bias per head, RMSNorm, ReLU MLP of 64, no biases."""

    def __init__(self, d: int = 32, heads: int = 4, hidden: int = 64, tokens: int = 12) -> None:
        super().__init__()
        self.heads, self.head_size = heads, d // heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.bias = nn.Parameter(torch.randn(1, heads, tokens, tokens) * 0.1)
        self.wi, self.wo = nn.Linear(d, hidden, bias=False), nn.Linear(hidden, d, bias=False)
        self.norm1, self.norm2 = RMSNorm(d), RMSNorm(d)

    def forward(self, x):
        b, t, d = x.shape
        h = self.norm1(x)
        q, k, v = (m(h).view(b, t, self.heads, self.head_size).transpose(1, 2) for m in (self.q, self.k, self.v))
        attention = (q @ k.transpose(-1, -2) + self.bias).softmax(-1)
        x = x + self.o((attention @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.wo(F.relu(self.wi(self.norm2(x))))


class T5(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.blocks, self.head = nn.Embedding(100, 32), nn.Sequential(T5Block(), T5Block()), nn.Linear(32, 4)

    def forward(self, ids):
        return self.head(self.blocks(self.embed(ids)).mean(1))


class WhisperEncoder(nn.Module):
    """Two Conv1d with GELU over 16 mel bins (the second strided), a position table, a pre-norm layer."""

    def __init__(self, mels: int = 16, d: int = 32, frames: int = 20) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv1d(mels, d, 3, padding=1), nn.Conv1d(d, d, 3, stride=2, padding=1)
        self.register_buffer("positions", torch.randn(frames // 2, d) * 0.1)
        self.layer = nn.TransformerEncoderLayer(d, 4, 4 * d, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, 5)

    def forward(self, x):
        x = F.gelu(self.conv2(F.gelu(self.conv1(x)))).permute(0, 2, 1)
        return self.head(self.norm(self.layer(x + self.positions)))


class Wav2VecFeatures(nn.Module):
    """wav2vec 2.0's feature extractor: strided Conv1d, GroupNorm with a group per channel, GELU, then a
    LayerNorm and a projection of the frames."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0, self.norm0 = nn.Conv1d(1, 32, 10, 5, bias=False), nn.GroupNorm(32, 32)
        self.conv1, self.norm, self.projection = nn.Conv1d(32, 32, 3, 2, bias=False), nn.LayerNorm(32), nn.Linear(32, 16)

    def forward(self, x):
        h = F.gelu(self.conv1(F.gelu(self.norm0(self.conv0(x[:, None])))))
        return self.projection(self.norm(h.transpose(1, 2)))


class TCN(nn.Module):
    """Dilated causal Conv1d padded on both sides and chomped to the input's length, with a residual."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv1d(20, 32, 3, padding=2, dilation=1), nn.Conv1d(32, 32, 3, padding=4, dilation=2)
        self.head = nn.Linear(32, 5)

    def forward(self, x):  # [N, T, 20]
        x = x.transpose(1, 2)
        steps = x.shape[-1]
        h = F.relu(self.conv1(x)[..., :steps])
        h = F.relu(self.conv2(h)[..., :steps]) + h
        return self.head(h[..., -1])


# ---- convolutional networks -----------------------------------------------------------------------------
class ConvNeXtBlock(nn.Module):
    def __init__(self, c: int = 32) -> None:
        super().__init__()
        self.dw, self.norm = nn.Conv2d(c, c, 7, padding=3, groups=c), nn.LayerNorm(c)
        self.pw1, self.pw2, self.gamma = nn.Linear(c, 4 * c), nn.Linear(4 * c, c), nn.Parameter(torch.rand(c))

    def forward(self, x):
        y = self.gamma * self.pw2(F.gelu(self.pw1(self.norm(self.dw(x).permute(0, 2, 3, 1)))))
        return x + y.permute(0, 3, 1, 2)


class GhostModule(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        primary = math.ceil(c_out / 2)
        self.c_out = c_out
        self.primary = nn.Sequential(nn.Conv2d(c_in, primary, 1, bias=False), nn.BatchNorm2d(primary), nn.ReLU())
        self.cheap = nn.Sequential(nn.Conv2d(primary, primary, 3, padding=1, groups=primary, bias=False),
                                   nn.BatchNorm2d(primary), nn.ReLU())

    def forward(self, x):
        a = self.primary(x)
        return torch.cat([a, self.cheap(a)], 1)[:, :self.c_out]


class GhostBottleneck(nn.Module):
    def __init__(self, c: int = 32) -> None:
        super().__init__()
        self.expand, self.project = GhostModule(c, 64), GhostModule(64, c)

    def forward(self, x):
        return x + self.project(self.expand(x))


def conv_bn(c_in: int, c_out: int, k: int = 1, stride: int = 1, groups: int = 1, act: nn.Module | None = None,
            dilation: int = 1) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, k, stride, dilation * (k // 2), dilation=dilation, groups=groups, bias=False),
              nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, act) if act is not None else nn.Sequential(*layers)


class RegNetBlock(nn.Module):
    def __init__(self, c: int = 32, width: int = 64, group_width: int = 8) -> None:
        super().__init__()
        self.a, self.c = conv_bn(c, width, act=nn.ReLU()), conv_bn(width, c)
        self.b = conv_bn(width, width, 3, groups=width // group_width, act=nn.ReLU())

    def forward(self, x):
        return F.relu(x + self.c(self.b(self.a(x))))


class RepVGGBlock(nn.Module):
    def __init__(self, c: int = 32) -> None:
        super().__init__()
        self.k3, self.k1, self.identity = conv_bn(c, c, 3), conv_bn(c, c, 1), nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(self.k3(x) + self.k1(x) + self.identity(x))


class HRFusion(nn.Module):
    """Two resolutions exchanged: the low one upsampled (nearest) into the high, the high strided down."""

    def __init__(self, c: int = 32) -> None:
        super().__init__()
        self.low, self.high = conv_bn(c, 2 * c, 3, 2, act=nn.ReLU()), conv_bn(c, c, 3, act=nn.ReLU())
        self.up, self.down = conv_bn(2 * c, c), conv_bn(c, 2 * c, 3, 2)

    def forward(self, x):
        low, high = self.low(x), self.high(x)
        fused_high = F.relu(high + F.interpolate(self.up(low), scale_factor=2, mode="nearest"))
        fused_low = F.relu(low + self.down(high))
        return fused_high + F.interpolate(fused_low[:, :32], scale_factor=2)


# ---- YOLO11 and YOLOv10 (after ultralytics' modules) ------------------------------------------------------
class Conv(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1, g: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(c_in, c_out, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(c_out)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c_in: int, c_out: int, shortcut: bool = True, e: float = 0.5) -> None:
        super().__init__()
        self.cv1, self.cv2 = Conv(c_in, int(c_out * e), 3), Conv(int(c_out * e), c_out, 3)
        self.add = shortcut and c_in == c_out

    def forward(self, x):
        return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))


class C3(nn.Module):
    def __init__(self, c_in: int, c_out: int, n: int = 1) -> None:
        super().__init__()
        hidden = c_out // 2
        self.cv1, self.cv2, self.cv3 = Conv(c_in, hidden), Conv(c_in, hidden), Conv(2 * hidden, c_out)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, e=1.0) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class C2f(nn.Module):
    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = False, e: float = 0.5) -> None:
        super().__init__()
        self.c = int(c_out * e)
        self.cv1, self.cv2 = Conv(c_in, 2 * self.c), Conv((2 + n) * self.c, c_out)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut, 1.0) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class C3k2(C2f):
    def __init__(self, c_in: int, c_out: int, c3k: bool = False, e: float = 0.5) -> None:
        super().__init__(c_in, c_out, 1, True, e)
        self.m = nn.ModuleList([C3(self.c, self.c, 2) if c3k else Bottleneck(self.c, self.c)])


class SPPF(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.cv1, self.cv2, self.m = Conv(c_in, c_in // 2), Conv(c_in // 2 * 4, c_out), nn.MaxPool2d(5, 1, 2)

    def forward(self, x):
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class PSAAttention(nn.Module):
    """q, k, v of each head split from one 1x1 conv viewed [N, heads, 2 key + head, H x W]; a depthwise
    positional conv of v added to the attention's output."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_size = heads, dim // heads
        self.key_size = self.head_size // 2
        self.scale = self.key_size ** -0.5
        self.qkv = Conv(dim, dim + 2 * self.key_size * heads, act=False)
        self.proj, self.pe = Conv(dim, dim, act=False), Conv(dim, dim, 3, g=dim, act=False)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).view(b, self.heads, 2 * self.key_size + self.head_size, h * w).split(
            [self.key_size, self.key_size, self.head_size], dim=2)
        attention = ((q.transpose(-2, -1) @ k) * self.scale).softmax(dim=-1)
        x = (v @ attention.transpose(-2, -1)).view(b, c, h, w) + self.pe(v.reshape(b, c, h, w))
        return self.proj(x)


class C2PSA(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.c = c // 2
        self.cv1, self.cv2 = Conv(c, 2 * self.c), Conv(2 * self.c, c)
        self.attention = PSAAttention(self.c, self.c // 16)
        self.ffn = nn.Sequential(Conv(self.c, 2 * self.c), Conv(2 * self.c, self.c, act=False))

    def forward(self, x):
        a, b = self.cv1(x).split((self.c, self.c), dim=1)
        b = b + self.attention(b)
        return self.cv2(torch.cat((a, b + self.ffn(b)), 1))


def make_anchors(maps: list, strides: tuple[int, ...]):
    points, stride_of = [], []
    for feature, stride in zip(maps, strides):
        _, _, h, w = feature.shape
        sy, sx = torch.meshgrid(torch.arange(h, dtype=torch.float32) + 0.5, torch.arange(w, dtype=torch.float32) + 0.5,
                                indexing="ij")
        points.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_of.append(torch.full((h * w, 1), float(stride)))
    return torch.cat(points).transpose(0, 1), torch.cat(stride_of).transpose(0, 1)


class Detect(nn.Module):
    """YOLO11's head: per level a box branch (4 x 16 bins) and a class branch of depthwise-separable convs,
    joined, flattened over the anchors, the bins' softmax expectation by a fixed 1x1 conv (DFL), boxes
    decoded against the anchors, class scores through a sigmoid."""

    def __init__(self, classes: int = 8, channels: tuple[int, ...] = (32, 64), strides: tuple[int, ...] = (8, 16)) -> None:
        super().__init__()
        self.classes, self.bins, self.strides = classes, 16, strides
        box, cls = max(16, channels[0] // 4, 64), max(channels[0], classes)
        self.box = nn.ModuleList(nn.Sequential(Conv(c, box, 3), Conv(box, box, 3), nn.Conv2d(box, 64, 1)) for c in channels)
        self.cls = nn.ModuleList(nn.Sequential(Conv(c, c, 3, g=c), Conv(c, cls), Conv(cls, cls, 3, g=cls), Conv(cls, cls),
                                               nn.Conv2d(cls, classes, 1)) for c in channels)
        self.dfl = nn.Conv2d(16, 1, 1, bias=False).requires_grad_(False)
        self.dfl.weight.data[:] = torch.arange(16, dtype=torch.float32).view(1, 16, 1, 1)

    def forward(self, maps):
        b = maps[0].shape[0]
        maps = [torch.cat((box(x), cls(x)), 1) for box, cls, x in zip(self.box, self.cls, maps)]
        anchors, strides = make_anchors(maps, self.strides)
        joined = torch.cat([x.view(b, 64 + self.classes, -1) for x in maps], 2)
        distances, scores = joined.split((64, self.classes), 1)
        a = distances.shape[-1]
        distances = self.dfl(distances.view(b, 4, 16, a).transpose(2, 1).softmax(1)).view(b, 4, a)
        lt, rb = distances.chunk(2, 1)
        x1y1, x2y2 = anchors.unsqueeze(0) - lt, anchors.unsqueeze(0) + rb
        boxes = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * strides
        return torch.cat((boxes, scores.sigmoid()), 1)


class Yolo11(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.p3 = nn.Sequential(Conv(3, 16, 3, 2), Conv(16, 32, 3, 2), C3k2(32, 32, e=0.25), Conv(32, 32, 3, 2), C3k2(32, 32, True))
        self.p4 = nn.Sequential(Conv(32, 64, 3, 2), C3k2(64, 64, True), SPPF(64, 64), C2PSA(64))
        self.up, self.top_down, self.down, self.bottom_up = nn.Upsample(None, 2, "nearest"), C3k2(96, 32), Conv(32, 32, 3, 2), C3k2(96, 64, True)
        self.detect = Detect()

    def forward(self, x):
        p3 = self.p3(x)
        p4 = self.p4(p3)
        n3 = self.top_down(torch.cat([self.up(p4), p3], 1))
        return self.detect([n3, self.bottom_up(torch.cat([self.down(n3), p4], 1))])


class RepVGGDW(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv, self.conv1 = Conv(c, c, 7, g=c, act=False), Conv(c, c, 3, g=c, act=False)

    def forward(self, x):
        return F.silu(self.conv(x) + self.conv1(x))


class CIB(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.cv1 = nn.Sequential(Conv(c, c, 3, g=c), Conv(c, c), RepVGGDW(c), Conv(c, c), Conv(c, c, 3, g=c))

    def forward(self, x):
        return x + self.cv1(x)


class C2fCIB(C2f):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(c_in, c_out, 1, True)
        self.m = nn.ModuleList([CIB(self.c)])


class YoloV10(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(Conv(3, 16, 3, 2), Conv(16, 32, 3, 2), C2f(32, 32, 1, True),
                                      nn.Sequential(Conv(32, 64), Conv(64, 64, 3, 2, g=64, act=False)),  # SCDown
                                      C2fCIB(64, 64), SPPF(64, 64))
        self.head = nn.Sequential(Conv(64, 32, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        return self.head(self.backbone(x))


class AIFI(nn.Module):
    """RT-DETR's: one transformer encoder layer on the flattened top map plus a 2-D sin-cos embedding of
    the positions (computed in the graph), viewed back as a map."""

    def __init__(self, c: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(c, heads, batch_first=True)
        self.fc1, self.fc2, self.norm1, self.norm2 = nn.Linear(c, 2 * c), nn.Linear(2 * c, c), nn.LayerNorm(c), nn.LayerNorm(c)

    @staticmethod
    def positions(w: int, h: int, dim: int):
        gw, gh = torch.meshgrid(torch.arange(w, dtype=torch.float32), torch.arange(h, dtype=torch.float32), indexing="ij")
        omega = 1.0 / (10000.0 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4)))
        ow, oh = gw.flatten()[..., None] @ omega[None], gh.flatten()[..., None] @ omega[None]
        return torch.cat([ow.sin(), ow.cos(), oh.sin(), oh.cos()], 1)[None]

    def forward(self, x):
        c, h, w = x.shape[1:]
        tokens = x.flatten(2).permute(0, 2, 1)
        q = tokens + self.positions(w, h, c)
        tokens = self.norm1(tokens + self.attention(q, q, value=tokens, need_weights=False)[0])
        tokens = self.norm2(tokens + self.fc2(F.gelu(self.fc1(tokens))))
        return tokens.permute(0, 2, 1).view(-1, c, h, w)


class RTDETREncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(Conv(3, 32, 3, 2), Conv(32, 64, 3, 2), Conv(64, 64, act=False))
        self.aifi, self.head = AIFI(), nn.Sequential(Conv(64, 32), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        return self.head(self.aifi(self.backbone(x)))


# ---- more families ------------------------------------------------------------------------------------------
class MBConv(nn.Module):
    """EfficientNet's: expand 4x, depthwise, squeeze-excite (SiLU, reduced to C / 4), project, residual."""

    def __init__(self, c: int = 32) -> None:
        super().__init__()
        hidden = 4 * c
        self.expand, self.dw = conv_bn(c, hidden, act=nn.SiLU()), conv_bn(hidden, hidden, 3, groups=hidden, act=nn.SiLU())
        self.squeeze, self.excite, self.project = nn.Conv2d(hidden, c // 4, 1), nn.Conv2d(c // 4, hidden, 1), conv_bn(hidden, c)

    def forward(self, x):
        h = self.dw(self.expand(x))
        h = h * torch.sigmoid(self.excite(F.silu(self.squeeze(h.mean((2, 3), keepdim=True)))))
        return x + self.project(h)


class MLPMixer(nn.Module):
    """Patches of 4 x 4 embedded to 32, a token-mixing MLP (16 tokens -> 32 -> 16) and a channel MLP."""

    def __init__(self, tokens: int = 16, d: int = 32) -> None:
        super().__init__()
        self.embed, self.norm1, self.norm2, self.head = nn.Conv2d(3, d, 4, 4), nn.LayerNorm(d), nn.LayerNorm(d), nn.Linear(d, 10)
        self.token_mlp = nn.Sequential(nn.Linear(tokens, 2 * tokens), nn.GELU(), nn.Linear(2 * tokens, tokens))
        self.channel_mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return self.head((x + self.channel_mlp(self.norm2(x))).mean(1))


class SegFormerBlock(nn.Module):
    """Efficient self-attention (keys and values from the map reduced by a strided conv, 2 heads) and the
    Mix-FFN (a depthwise conv on the hidden tokens viewed as a map)."""

    def __init__(self, d: int = 32, heads: int = 2, hidden: int = 128) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2, self.reduced_norm = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.kv, self.proj, self.reduce = nn.Linear(d, d), nn.Linear(d, 2 * d), nn.Linear(d, d), nn.Conv2d(d, d, 2, 2)
        self.fc1, self.dw, self.fc2 = nn.Linear(d, hidden), nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden), nn.Linear(hidden, d)

    def forward(self, x, h: int, w: int):
        b, n, c = x.shape
        y = self.norm1(x)
        q = self.q(y).reshape(b, n, self.heads, c // self.heads).permute(0, 2, 1, 3)
        reduced = self.reduced_norm(self.reduce(y.permute(0, 2, 1).reshape(b, c, h, w)).reshape(b, c, -1).permute(0, 2, 1))
        k, v = self.kv(reduced).reshape(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attention = (q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5).softmax(-1)
        x = x + self.proj((attention @ v).transpose(1, 2).reshape(b, n, c))
        hidden = self.fc1(self.norm2(x))
        hidden = self.dw(hidden.transpose(1, 2).view(b, -1, h, w)).flatten(2).transpose(1, 2)
        return x + self.fc2(F.gelu(hidden))


class SegFormer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.norm, self.block, self.head = nn.Conv2d(3, 32, 7, 4, 3), nn.LayerNorm(32), SegFormerBlock(), nn.Conv2d(32, 5, 1)

    def forward(self, x):
        x = self.embed(x)
        b, c, h, w = x.shape
        x = self.block(self.norm(x.flatten(2).transpose(1, 2)), h, w)
        return self.head(x.transpose(1, 2).reshape(b, c, h, w))


class TimeResBlock(nn.Module):
    """A diffusion U-Net's residual block: GroupNorm(8), SiLU, conv, plus the time embedding projected per
    channel and added to the map."""

    def __init__(self, c: int = 32, hidden: int = 64, time: int = 16) -> None:
        super().__init__()
        self.norm1, self.conv1, self.time = nn.GroupNorm(8, c), nn.Conv2d(c, hidden, 3, padding=1), nn.Linear(time, hidden)
        self.norm2, self.conv2 = nn.GroupNorm(8, hidden), nn.Conv2d(hidden, c, 3, padding=1)

    def forward(self, x, t):
        h = self.conv1(F.silu(self.norm1(x))) + self.time(F.silu(t))[:, :, None, None]
        return x + self.conv2(F.silu(self.norm2(h)))


class MapAttention(nn.Module):
    def __init__(self, c: int = 32) -> None:
        super().__init__()
        self.norm, self.qkv, self.proj = nn.GroupNorm(8, c), nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).chunk(3, 1)
        attention = torch.softmax(q.flatten(2).transpose(1, 2) @ k.flatten(2) / math.sqrt(c), -1)
        return x + self.proj((v.flatten(2) @ attention.transpose(1, 2)).view(b, c, h, w))


class DiffusionUNet(nn.Module):
    """Sinusoidal time embedding (of a fixed step, computed in the graph) through an MLP, residual blocks at
    two resolutions, self-attention at the lower one, a transposed conv up and a skip."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs, self.time = nn.Conv2d(3, 32, 3, padding=1), nn.Sequential(nn.Linear(16, 16), nn.SiLU(), nn.Linear(16, 16))
        self.block1, self.down, self.block2, self.attention = TimeResBlock(), nn.Conv2d(32, 32, 3, 2, 1), TimeResBlock(), MapAttention()
        self.up, self.block3 = nn.ConvTranspose2d(32, 32, 2, 2), TimeResBlock()
        self.out = nn.Sequential(nn.GroupNorm(8, 32), nn.SiLU(), nn.Conv2d(32, 3, 3, padding=1))

    def forward(self, x):
        angles = torch.ones(x.shape[0], 1) * 0.5 * torch.exp(-math.log(10000) * torch.arange(8) / 8)[None]
        t = self.time(torch.cat([angles.sin(), angles.cos()], 1))
        h1 = self.block1(self.inputs(x), t)
        h2 = self.attention(self.block2(self.down(h1), t))
        return self.out(self.block3(self.up(h2) + h1, t))


class DETRDecoder(nn.Module):
    """Learned object queries expanded to the batch, a transformer decoder layer over a conv's tokens, class
    and box heads."""

    def __init__(self, d: int = 32, queries: int = 6) -> None:
        super().__init__()
        self.backbone, self.queries = nn.Sequential(nn.Conv2d(3, d, 4, 4), nn.ReLU()), nn.Parameter(torch.randn(queries, d))
        self.layer = nn.TransformerDecoderLayer(d, 4, 64, dropout=0.0, batch_first=True)
        self.classes, self.box = nn.Linear(d, 5), nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 4))

    def forward(self, x):
        memory = self.backbone(x).flatten(2).transpose(1, 2)
        h = self.layer(self.queries.unsqueeze(0).expand(x.shape[0], -1, -1), memory)
        return torch.cat([self.classes(h), self.box(h).sigmoid()], -1)


class PoolFormerBlock(nn.Module):
    """Average pooling as the token mixer (minus the input), GroupNorm(1), layer scales per channel."""

    def __init__(self, c: int = 32) -> None:
        super().__init__()
        self.norm1, self.norm2, self.pool = nn.GroupNorm(1, c), nn.GroupNorm(1, c), nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.mlp = nn.Sequential(nn.Conv2d(c, 4 * c, 1), nn.GELU(), nn.Conv2d(4 * c, c, 1))
        self.scale1, self.scale2 = nn.Parameter(torch.rand(c, 1, 1)), nn.Parameter(torch.rand(c, 1, 1))

    def forward(self, x):
        y = self.norm1(x)
        x = x + self.scale1 * (self.pool(y) - y)
        return x + self.scale2 * self.mlp(self.norm2(x))


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+: ASPP (a 1x1 conv, two dilated 3x3 convs and image pooling upsampled to the map's size)
    on the stride-4 features, upsampled and joined with the stride-2 ones, then a head per pixel."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.stem, self.deep = conv_bn(3, 16, 3, 2, act=nn.ReLU()), conv_bn(16, 32, 3, 2, act=nn.ReLU())
        self.branches = nn.ModuleList([conv_bn(32, 16, act=nn.ReLU())] + [
            conv_bn(32, 16, 3, act=nn.ReLU(), dilation=d) for d in (2, 3)])
        self.pooled = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(32, 16, 1), nn.ReLU())
        self.project, self.low = conv_bn(64, 24, act=nn.ReLU()), conv_bn(16, 8, act=nn.ReLU())
        self.head = nn.Sequential(conv_bn(32, 16, 3, act=nn.ReLU()), nn.Conv2d(16, classes, 1))

    def forward(self, x):
        low = self.stem(x)
        deep = self.deep(low)
        pooled = F.interpolate(self.pooled(deep), size=deep.shape[-2:], mode="bilinear", align_corners=False)
        aspp = self.project(torch.cat([b(deep) for b in self.branches] + [pooled], 1))
        up = F.interpolate(aspp, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(torch.cat([up, self.low(low)], 1))


class DenseBlock(nn.Module):
    """DenseNet's: each layer (BN, ReLU, 1x1 conv to 4 x growth, BN, ReLU, 3x3 conv to growth) reads the
    concatenation of the input and every earlier layer's output; a transition halves the channels."""

    def __init__(self, c: int = 32, growth: int = 8, layers: int = 3) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Sequential(
            nn.BatchNorm2d(c + i * growth), nn.ReLU(), nn.Conv2d(c + i * growth, 4 * growth, 1, bias=False),
            nn.BatchNorm2d(4 * growth), nn.ReLU(), nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False))
            for i in range(layers))
        width = c + layers * growth
        self.transition = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, c, 1, bias=False),
                                        nn.AvgPool2d(2))

    def forward(self, x):
        for layer in self.layers:
            x = torch.cat([x, layer(x)], 1)
        return self.transition(x)


class Res2NetBlock(nn.Module):
    """Res2Net's bottleneck: a 1x1 conv, its output split in four; each part after the first gets a 3x3 conv
    of itself plus the previous part's output (the last part's conv reads the sum); joined, a 1x1 conv and
    the residual."""

    def __init__(self, c: int = 32, width: int = 8, scale: int = 4) -> None:
        super().__init__()
        self.width = width
        self.reduce = conv_bn(c, width * scale, act=nn.ReLU())
        self.convs = nn.ModuleList(conv_bn(width, width, 3, act=nn.ReLU()) for _ in range(scale - 1))
        self.expand = conv_bn(width * scale, c)

    def forward(self, x):
        parts = torch.split(self.reduce(x), self.width, 1)
        out, previous = [parts[0]], None
        for part, conv in zip(parts[1:], self.convs):
            previous = conv(part if previous is None else part + previous)
            out.append(previous)
        return F.relu(x + self.expand(torch.cat(out, 1)))


class SharedHeadDetector(nn.Module):
    """RetinaNet's and FCOS's habit: one head (its convs' weights shared) run on every pyramid level, a
    learned scale per level on the box branch, the levels' outputs flattened and joined."""

    def __init__(self, c: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.c3, self.c4 = conv_bn(3, c, 3, 2, act=nn.ReLU()), conv_bn(c, 2 * c, 3, 2, act=nn.ReLU())
        self.lateral3, self.lateral4 = nn.Conv2d(c, c, 1), nn.Conv2d(2 * c, c, 1)
        self.tower = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1), nn.ReLU())
        self.cls, self.box = nn.Conv2d(c, classes, 3, padding=1), nn.Conv2d(c, 4, 3, padding=1)
        self.scales = nn.Parameter(torch.tensor([1.0, 2.0]))

    def forward(self, x):
        c3 = self.c3(x)
        c4 = self.c4(c3)
        p4 = self.lateral4(c4)
        p3 = self.lateral3(c3) + F.interpolate(p4, scale_factor=2, mode="nearest")
        outs = []
        for level, p in enumerate((p3, p4)):
            t = self.tower(p)
            out = torch.cat([self.cls(t), self.box(t) * self.scales[level]], 1)
            outs.append(out.flatten(2))
        return torch.cat(outs, 2)


class LinearAttention(nn.Module):
    """EfficientViT's ReLU linear attention on a map: q, k, v from one 1x1 conv, plus a multi-scale copy of
    them (a depthwise 5x5 and a grouped 1x1 conv); per head, relu(q) (relu(k)^T v) over the positions,
    divided by relu(q) relu(k)^T 1; a 1x1 projection and the residual."""

    def __init__(self, c: int = 32, head: int = 8) -> None:
        super().__init__()
        self.head = head
        self.qkv = nn.Conv2d(c, 3 * c, 1, bias=False)
        self.aggregate = nn.Sequential(nn.Conv2d(3 * c, 3 * c, 5, padding=2, groups=3 * c, bias=False),
                                       nn.Conv2d(3 * c, 3 * c, 1, groups=3 * c // head, bias=False))
        self.project = conv_bn(2 * c, c)

    def forward(self, x):
        n, _, h, w = x.shape
        qkv = self.qkv(x)
        multi = torch.cat([qkv, self.aggregate(qkv)], 1)  # [n, 6c, h, w]
        multi = multi.reshape(n, -1, 3 * self.head, h * w).transpose(-1, -2)  # [n, heads, hw, 3 x head]
        q, k, v = multi.split(self.head, dim=-1)
        q, k = F.relu(q), F.relu(k)
        kv = k.transpose(-1, -2) @ v  # [n, heads, head, head]
        out = (q @ kv) / (q @ k.sum(2, keepdim=True).transpose(-1, -2) + 1e-6)
        out = out.transpose(-1, -2).reshape(n, -1, h, w)
        return x + self.project(out)


class SegmentationHead(nn.Module):
    """YOLOv8-seg's: a prototype branch (conv, 2x upsample, convs to 8 prototypes) and per-anchor mask
    coefficients from another branch; the masks are the coefficients times the prototypes, [N, anchors, h x w]."""

    def __init__(self, prototypes: int = 8) -> None:
        super().__init__()
        self.backbone = nn.Sequential(conv_bn(3, 16, 3, 2, act=nn.SiLU()), conv_bn(16, 32, 3, 2, act=nn.SiLU()))
        self.proto = nn.Sequential(conv_bn(32, 16, 3, act=nn.SiLU()), nn.Upsample(scale_factor=2),
                                   conv_bn(16, 16, 3, act=nn.SiLU()), conv_bn(16, prototypes, act=nn.SiLU()))
        self.coefficients = nn.Sequential(conv_bn(32, 16, 3, act=nn.SiLU()), nn.Conv2d(16, prototypes, 1))

    def forward(self, x):
        features = self.backbone(x)
        protos = self.proto(features).flatten(2)  # [N, k, h x w]
        coefficients = self.coefficients(features).flatten(2).transpose(1, 2)  # [N, anchors, k]
        return torch.sigmoid(coefficients @ protos)


class InceptionBlock(nn.Module):
    """GoogLeNet's: a 1x1 branch, 1x1 then 3x3, 1x1 then two 3x3, and a 3x3 max pool then 1x1, joined."""

    def __init__(self, c: int = 32) -> None:
        super().__init__()
        self.b1 = conv_bn(c, 8, act=nn.ReLU())
        self.b2 = nn.Sequential(conv_bn(c, 12, act=nn.ReLU()), conv_bn(12, 8, 3, act=nn.ReLU()))
        self.b3 = nn.Sequential(conv_bn(c, 8, act=nn.ReLU()), conv_bn(8, 8, 3, act=nn.ReLU()), conv_bn(8, 8, 3, act=nn.ReLU()))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn(c, 8, act=nn.ReLU()))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


MODELS = {
    "llama": Llama, "t5": T5, "whisper_encoder": WhisperEncoder, "wav2vec_features": Wav2VecFeatures, "tcn": TCN,
    "convnext": lambda: Classifier(ConvNeXtBlock()), "ghostnet": lambda: Classifier(GhostBottleneck()),
    "regnet": lambda: Classifier(RegNetBlock()), "repvgg": lambda: Classifier(RepVGGBlock()),
    "hrnet": lambda: Classifier(HRFusion()), "yolo11": Yolo11, "yolov10": YoloV10, "rtdetr_aifi": RTDETREncoder,
    "efficientnet_mbconv": lambda: Classifier(MBConv()), "mlp_mixer": MLPMixer, "segformer": SegFormer,
    "diffusion_unet": DiffusionUNet, "detr_decoder": DETRDecoder, "poolformer": lambda: Classifier(PoolFormerBlock()),
    "deeplabv3plus": DeepLabV3Plus, "densenet": lambda: Classifier(DenseBlock()),
    "res2net": lambda: Classifier(Res2NetBlock()), "shared_head_detector": SharedHeadDetector,
    "linear_attention": lambda: Classifier(LinearAttention()), "segmentation_head": SegmentationHead,
    "inception": lambda: Classifier(InceptionBlock()),
}
TOKEN_INPUTS = ("llama", "t5")
INPUTS = {"whisper_encoder": (2, 16, 20), "wav2vec_features": (2, 400), "tcn": (2, 16, 20), "yolo11": (2, 3, 64, 64),
          "yolov10": (2, 3, 64, 64), "rtdetr_aifi": (2, 3, 32, 32), "segformer": (2, 3, 32, 32),
          "deeplabv3plus": (2, 3, 32, 32), "shared_head_detector": (2, 3, 32, 32), "segmentation_head": (2, 3, 32, 32)}


if __name__ == "__main__":
    main(MODELS, TOKEN_INPUTS, INPUTS)
