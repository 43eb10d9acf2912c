"""Prune small PyTorch models of more families, exported by both PyTorch exporters.

A second set beside ``probe_families.py``: YOLOX's Focus stem (space-to-depth by strided slices),
PointNet (input and feature transforms predicted per sample, max over the points), a DCGAN generator and
a convolutional VAE (transposed convs), C3D (3-D convs), EfficientDet's BiFPN fusion (normalised learned
weights), NAFNet (SimpleGate, simplified channel attention, LayerNorm2d), EDSR (scaled residuals, pixel
shuffle), DLRM (embeddings and their pairwise dot products), CenterNet (transposed-conv neck, three
heads) and its DLA neck's depthwise transposed conv, CBAM, ResNeSt's split attention, per-channel PReLU,
AlexNet's local response normalisation, CoordConv, AdaIN, SegNet (unpooling by the pools' indices) and
attention by ``torch.onnx.ops.attention`` on 3-D inputs (ONNX's Attention of the 3-D form, at ``PROBE_OPSET=23``).
Random weights and BatchNorm statistics; each is pruned at ``--ratio 0.5 --round-to 1`` and checked with
the masking oracle (see ``probe_architectures.py``, whose ``main`` this runs). Needs PyTorch and
onnxscript::

    python tools/probe_more_families.py /tmp/more_families [NAME ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from probe_architectures import Classifier, main  # noqa: E402
from probe_families import conv_bn  # noqa: E402


def pooled_head(block: nn.Module, channels: int = 32) -> nn.Module:
    """``block`` then global average pooling and a linear classifier of 10."""
    return nn.Sequential(block, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10))


class Focus(nn.Module):
    """YOLOX's (and early YOLOv5's) stem: space-to-depth by four strided slices, joined on the channels."""

    def __init__(self) -> None:
        super().__init__()
        self.body = pooled_head(nn.Sequential(conv_bn(12, 32, 3, act=nn.SiLU()), conv_bn(32, 32, 3, 2, act=nn.SiLU()),
                                              conv_bn(32, 32, act=nn.SiLU())))

    def forward(self, x):
        return self.body(torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1))


class TNet(nn.Module):
    """PointNet's transform net: a k x k matrix per sample, from a shared MLP and a max over the points."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k
        self.mlp = nn.Sequential(nn.Conv1d(k, 16, 1), nn.BatchNorm1d(16), nn.ReLU(), nn.Conv1d(16, 32, 1),
                                 nn.BatchNorm1d(32), nn.ReLU())
        self.fc = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, k * k))

    def forward(self, x):
        return self.fc(self.mlp(x).max(2)[0]).view(-1, self.k, self.k) + torch.eye(self.k)


class PointNet(nn.Module):
    """PointNet's classifier: points [N, 3, P] turned by an input transform, a shared MLP, a feature
    transform, another MLP, the max over the points, a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.input_transform, self.feature_transform = TNet(3), TNet(32)
        self.mlp1 = nn.Sequential(nn.Conv1d(3, 32, 1), nn.BatchNorm1d(32), nn.ReLU())
        self.mlp2 = nn.Sequential(nn.Conv1d(32, 32, 1), nn.BatchNorm1d(32), nn.ReLU(), nn.Conv1d(32, 64, 1),
                                  nn.BatchNorm1d(64), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        x = self.mlp1(torch.bmm(self.input_transform(x), x))
        return self.head(self.mlp2(torch.bmm(self.feature_transform(x), x)).max(2)[0])


class DCGANGenerator(nn.Module):
    """DCGAN's generator: a latent vector [N, 16] up to a 16 x 16 image by transposed convs."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.ConvTranspose2d(16, 32, 4, 1, 0, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                                 nn.ConvTranspose2d(32, 16, 4, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                 nn.ConvTranspose2d(16, 3, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z):
        return self.net(z.view(-1, 16, 1, 1))


class C3D(nn.Module):
    """A small C3D: 3-D convs over 4 frames, BatchNorm3d, 3-D max pooling, a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv3d(3, 16, 3, padding=1), nn.BatchNorm3d(16), nn.ReLU(), nn.MaxPool3d((1, 2, 2)),
                                 nn.Conv3d(16, 32, 3, padding=1), nn.BatchNorm3d(32), nn.ReLU(), nn.MaxPool3d(2),
                                 nn.Conv3d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                                 nn.Linear(32, 10))

    def forward(self, x):
        return self.net(x)


class VAE(nn.Module):
    """A convolutional VAE at inference: the encoder to the latent mean and log-variance, the decoder from
    the mean (dense to a 4 x 4 map, then transposed convs); the variance joins the output."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                                     nn.Flatten())
        self.mu, self.logvar, self.expand = nn.Linear(512, 8), nn.Linear(512, 8), nn.Linear(8, 512)
        self.decoder = nn.Sequential(nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(16, 3, 4, 2, 1),
                                     nn.Sigmoid())

    def forward(self, x):
        h = self.encoder(x)
        mu = self.mu(h)
        return self.decoder(self.expand(mu).view(-1, 32, 4, 4)) + self.logvar(h).exp().mean(1).view(-1, 1, 1, 1)


class BiFPNFusion(nn.Module):
    """EfficientDet's fast normalised fusion of two levels: ReLU'd learned weights over their sum, then a
    depthwise-separable conv."""

    def __init__(self) -> None:
        super().__init__()
        self.down = conv_bn(32, 32, 3, 2, act=nn.ReLU())
        self.weights = nn.Parameter(torch.ones(2))
        self.conv = nn.Sequential(nn.Conv2d(32, 32, 3, 1, 1, groups=32, bias=False), conv_bn(32, 32, act=nn.SiLU()))

    def forward(self, p3):
        w = F.relu(self.weights)
        w = w / (w.sum() + 1e-4)
        return self.conv(F.silu(w[0] * p3 + w[1] * F.interpolate(self.down(p3), scale_factor=2.0, mode="nearest")))


class LayerNorm2d(nn.Module):
    """NAFNet's LayerNorm over the channels of a map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.rand(channels) + 0.5), nn.Parameter(torch.rand(channels) - 0.5)

    def forward(self, x):
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        return (x - mean) / (var + 1e-6).sqrt() * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class NAFNet(nn.Module):
    """NAFNet's block on a 16-channel stem: LayerNorm2d, 1x1 expansion, depthwise 3x3, SimpleGate (the two
    halves multiplied), simplified channel attention, 1x1 back and a learned per-channel residual scale;
    then the same with a gated FFN; a conv back to the image, added to it."""

    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.stem, self.out = nn.Conv2d(3, c, 3, 1, 1), nn.Conv2d(c, 3, 3, 1, 1)
        self.norm1, self.norm2 = LayerNorm2d(c), LayerNorm2d(c)
        self.expand = nn.Sequential(nn.Conv2d(c, 2 * c, 1), nn.Conv2d(2 * c, 2 * c, 3, 1, 1, groups=2 * c))
        self.attention = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, 1))
        self.project, self.ffn_in, self.ffn_out = nn.Conv2d(c, c, 1), nn.Conv2d(c, 2 * c, 1), nn.Conv2d(c, c, 1)
        self.beta, self.gamma = nn.Parameter(torch.rand(1, c, 1, 1)), nn.Parameter(torch.rand(1, c, 1, 1))

    @staticmethod
    def gate(x):
        a, b = x.chunk(2, dim=1)
        return a * b

    def forward(self, image):
        x0 = self.stem(image)
        x = self.gate(self.expand(self.norm1(x0)))
        y = x0 + self.project(x * self.attention(x)) * self.beta
        return self.out(y + self.ffn_out(self.gate(self.ffn_in(self.norm2(y)))) * self.gamma) + image


class EDSR(nn.Module):
    """EDSR: residual blocks without BatchNorm, scaled by 0.1, a long skip, a 2x pixel-shuffle upsampler."""

    def __init__(self, c: int = 32) -> None:
        super().__init__()
        self.head, self.body_end = nn.Conv2d(3, c, 3, 1, 1), nn.Conv2d(c, c, 3, 1, 1)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1))
                                    for _ in range(2))
        self.upsample = nn.Sequential(nn.Conv2d(c, 4 * c, 3, 1, 1), nn.PixelShuffle(2), nn.Conv2d(c, 3, 3, 1, 1))

    def forward(self, x):
        h = r = self.head(x)
        for block in self.blocks:
            r = r + 0.1 * block(r)
        return self.upsample(self.body_end(r) + h)


class DLRM(nn.Module):
    """DLRM: four sparse features' embeddings of 16 and a bottom MLP of four dense ones (the ids read
    as numbers here), their pairwise dot products (the upper triangle), and a top MLP."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(100, d) for _ in range(4))
        self.bottom = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, d), nn.ReLU())
        self.top = nn.Sequential(nn.Linear(d + 10, 32), nn.ReLU(), nn.Linear(32, 1))
        rows, cols = torch.triu_indices(5, 5, 1)
        self.register_buffer("rows", rows)
        self.register_buffer("cols", cols)

    def forward(self, ids):
        dense = self.bottom(ids[:, 4:8].float() / 100)
        features = torch.stack([dense] + [table(ids[:, i]) for i, table in enumerate(self.tables)], 1)
        pairs = torch.bmm(features, features.transpose(1, 2))[:, self.rows, self.cols]
        return self.top(torch.cat([dense, pairs], 1))


class CenterNet(nn.Module):
    """CenterNet: a backbone of stride 8, a neck of transposed convs with BatchNorm back to stride 2, and
    three heads (centre heatmap, box size, offset) joined."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(conv_bn(3, 16, 3, 2, act=nn.ReLU()), conv_bn(16, 32, 3, 2, act=nn.ReLU()),
                                      conv_bn(32, 64, 3, 2, act=nn.ReLU()))
        self.neck = nn.Sequential(nn.ConvTranspose2d(64, 32, 4, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                                  nn.ConvTranspose2d(32, 32, 4, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.heads = nn.ModuleList(nn.Sequential(nn.Conv2d(32, 16, 3, 1, 1), nn.ReLU(), nn.Conv2d(16, n, 1))
                                   for n in (4, 2, 2))

    def forward(self, x):
        f = self.neck(self.backbone(x))
        return torch.cat([self.heads[0](f).sigmoid(), self.heads[1](f), self.heads[2](f)], 1)


class DLAUp(nn.Module):
    """CenterNet-DLA's IDA up: a strided level upsampled by a depthwise transposed conv (bilinear-initialised
    in the original), added to the level above, then a conv."""

    def __init__(self) -> None:
        super().__init__()
        self.down = conv_bn(32, 32, 3, 2, act=nn.ReLU())
        self.up = nn.ConvTranspose2d(32, 32, 4, 2, 1, groups=32, bias=False)
        self.node = conv_bn(32, 32, 3, act=nn.ReLU())

    def forward(self, x):
        return self.node(x + self.up(self.down(x)))


class CBAM(nn.Module):
    """CBAM: channel attention (an MLP of the average- and max-pooled map), then spatial attention (a 7x7
    conv of the mean and max over the channels)."""

    def __init__(self, c: int = 32) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(c, c // 4, 1), nn.ReLU(), nn.Conv2d(c // 4, c, 1))
        self.spatial = nn.Conv2d(2, 1, 7, 1, 3)

    def forward(self, x):
        x = x * torch.sigmoid(self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1)))
        return x * torch.sigmoid(self.spatial(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))


class SplitAttention(nn.Module):
    """ResNeSt's split attention (radix 2): a grouped conv to 2 x C, the branches summed and pooled, an MLP
    to 2 x C, a softmax over the radix, the branches weighted by it and summed; a residual."""

    def __init__(self, c: int = 32, radix: int = 2) -> None:
        super().__init__()
        self.c, self.radix = c, radix
        self.conv = conv_bn(c, c * radix, 3, groups=radix, act=nn.ReLU())
        self.fc1, self.fc2 = conv_bn(c, 16, act=nn.ReLU()), nn.Conv2d(16, c * radix, 1)

    def forward(self, x):
        splits = torch.split(self.conv(x), self.c, 1)
        attention = self.fc2(self.fc1(F.adaptive_avg_pool2d(sum(splits), 1)))
        attention = F.softmax(attention.view(x.shape[0], self.radix, -1), 1).view(x.shape[0], -1, 1, 1)
        return x + sum(a * s for a, s in zip(torch.split(attention, self.c, 1), splits))


class AdaIN(nn.Module):
    """Style transfer's AdaIN: content features normalised per channel and given the style features'
    per-channel mean and standard deviation (style from the mirrored input here), then a decoder."""

    def __init__(self) -> None:
        super().__init__()
        self.content, self.style = conv_bn(3, 32, 3, act=nn.ReLU()), conv_bn(3, 32, 3, act=nn.ReLU())
        self.decoder = nn.Sequential(nn.Conv2d(32, 16, 3, 1, 1), nn.ReLU(), nn.Conv2d(16, 3, 3, 1, 1))

    def forward(self, x):
        c, s = self.content(x), self.style(x.flip(3))
        c_mean, c_std = c.mean((2, 3), keepdim=True), c.std((2, 3), keepdim=True) + 1e-5
        s_mean, s_std = s.mean((2, 3), keepdim=True), s.std((2, 3), keepdim=True) + 1e-5
        return self.decoder((c - c_mean) / c_std * s_std + s_mean)


class CoordConv(nn.Module):
    """CoordConv: two coordinate channels, built from the map's size, joined to it before a conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = conv_bn(34, 32, 3, act=nn.ReLU())

    def forward(self, x):
        n, _, h, w = x.shape
        ys = torch.linspace(-1, 1, h).view(1, 1, h, 1).expand(n, 1, h, w)
        xs = torch.linspace(-1, 1, w).view(1, 1, 1, w).expand(n, 1, h, w)
        return self.conv(torch.cat([x, ys, xs], 1))


class SegNet(nn.Module):
    """SegNet: the encoder's max pools keep their indices, and the decoder unpools by them (``nn.MaxUnpool2d``,
    which the dynamo exporter writes as a scatter into flat zeros; the TorchScript exporter fails on it)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1, self.enc2 = conv_bn(3, 32, 3, act=nn.ReLU()), conv_bn(32, 32, 3, act=nn.ReLU())
        self.dec2, self.dec1 = conv_bn(32, 32, 3, act=nn.ReLU()), conv_bn(32, 16, 3, act=nn.ReLU())
        self.head = nn.Conv2d(16, 5, 1)
        self.pool, self.unpool = nn.MaxPool2d(2, 2, return_indices=True), nn.MaxUnpool2d(2, 2)

    def forward(self, x):
        x, first = self.pool(self.enc1(x))
        x, second = self.pool(self.enc2(x))
        return self.head(self.dec1(self.unpool(self.dec2(self.unpool(x, second)), first)))


class PackedAttention(nn.Module):
    """Attention by ``torch.onnx.ops.attention`` on 3-D q, k and v [N, T, heads x 8] (4 query heads, 2 key/value
    heads), which the dynamo exporter writes as ONNX's Attention of the 3-D form (``PROBE_OPSET=23``), then an
    output projection and the mean over the tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.out = nn.Linear(32, 32), nn.Linear(32, 16), nn.Linear(32, 16), nn.Linear(32, 10)

    def forward(self, x):
        y, *_ = torch.onnx.ops.attention(self.q(x), self.k(x), self.v(x), q_num_heads=4, kv_num_heads=2)
        return self.out(y).mean(1)


MODELS = {
    "yolox_focus": Focus, "pointnet": PointNet, "dcgan_generator": DCGANGenerator, "c3d": C3D, "vae": VAE,
    "bifpn": lambda: Classifier(BiFPNFusion()), "nafnet": NAFNet, "edsr": EDSR, "dlrm": DLRM, "centernet": CenterNet,
    "dla_up": lambda: Classifier(DLAUp()), "cbam": lambda: Classifier(CBAM()),
    "split_attention": lambda: Classifier(SplitAttention()),
    "prelu": lambda: Classifier(nn.Sequential(conv_bn(32, 32, 3, act=nn.PReLU(32)), nn.Conv2d(32, 32, 3, 1, 1),
                                              nn.PReLU(32))),
    "lrn": lambda: Classifier(nn.Sequential(nn.LocalResponseNorm(5), conv_bn(32, 32, 3, act=nn.ReLU()))),
    "coordconv": lambda: Classifier(CoordConv()), "adain": AdaIN, "segnet": SegNet, "packed_attention": PackedAttention,
}
TOKEN_INPUTS = ("dlrm",)
INPUTS = {"yolox_focus": (2, 3, 32, 32), "pointnet": (2, 3, 64), "dcgan_generator": (2, 16), "c3d": (2, 3, 4, 16, 16),
          "centernet": (2, 3, 32, 32), "packed_attention": (2, 6, 32)}


if __name__ == "__main__":
    main(MODELS, TOKEN_INPUTS, INPUTS)
