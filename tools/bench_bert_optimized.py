#!/usr/bin/env python
"""A BERT-like encoder before and after ONNX Runtime's transformer optimizer: both prune alike.

Builds a two-layer BERT (hidden 64, 4 heads, word, position and segment embeddings, a padding mask)
with random weights in PyTorch (a developer tool: ``pip install torch==2.13.0``), exports it with the
TorchScript exporter, fuses it with ``onnxruntime.transformers.optimizer`` (EmbedLayerNormalization,
Attention or MultiHeadAttention, SkipLayerNormalization, BiasGelu), prunes each at ``--ratio``, and
prints their MACs and the largest difference between the pruned models' outputs on right-padded masks. Then it fuses the
pruned export again, the way to keep Attention fused (see the README).

Usage: python tools/bench_bert_optimized.py [--ratio 0.5] [--out /tmp/bert]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.transformers import optimizer
from onnxruntime.transformers.fusion_options import FusionOptions
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import onnxprune  # noqa: E402

HIDDEN, HEADS, LAYERS, VOCAB, TOKENS = 64, 4, 2, 100, 16


class SelfAttention(nn.Module):
    """BERT's attention: q, k, v Linears, softmax(q k^T / sqrt(d) + mask) v, output Linear, residual LayerNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.query, self.key, self.value, self.out = (nn.Linear(HIDDEN, HIDDEN) for _ in range(4))
        self.norm = nn.LayerNorm(HIDDEN)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, tokens, HEADS, HIDDEN // HEADS).permute(0, 2, 1, 3)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(HIDDEN // HEADS) + mask
        context = torch.matmul(torch.softmax(scores, -1), v).permute(0, 2, 1, 3).contiguous().view(batch, tokens, HIDDEN)
        return self.norm(self.out(context) + x)


class Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = SelfAttention()
        self.up, self.down = nn.Linear(HIDDEN, 4 * HIDDEN), nn.Linear(4 * HIDDEN, HIDDEN)
        self.norm = nn.LayerNorm(HIDDEN)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, mask)
        return self.norm(self.down(nn.functional.gelu(self.up(x))) + x)


class Bert(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.words, self.positions, self.segments = nn.Embedding(VOCAB, HIDDEN), nn.Embedding(TOKENS, HIDDEN), nn.Embedding(2, HIDDEN)
        self.norm = nn.LayerNorm(HIDDEN)
        self.layers = nn.ModuleList(Layer() for _ in range(LAYERS))
        self.classifier = nn.Linear(HIDDEN, 3)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1]).unsqueeze(0)
        x = self.norm(self.words(ids) + self.positions(positions) + self.segments(segments))
        additive = (1.0 - mask[:, None, None, :].float()) * -10000.0
        for layer in self.layers:
            x = layer(x, additive)
        return self.classifier(x[:, 0])


def feeds(batch: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, TOKENS + 1, batch)
    return {"input_ids": rng.integers(0, VOCAB, (batch, TOKENS)),
            "attention_mask": (np.arange(TOKENS)[None] < lengths[:, None]).astype(np.int64),
            "token_type_ids": rng.integers(0, 2, (batch, TOKENS))}


def run(model: onnx.ModelProto | str, inputs: dict[str, np.ndarray]) -> np.ndarray:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, inputs)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bert"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    exported = args.out / "bert.onnx"
    example = {k: torch.from_numpy(v) for k, v in feeds(2).items()}
    names = ["input_ids", "attention_mask", "token_type_ids"]
    torch.onnx.export(Bert().eval(), tuple(example[n] for n in names), str(exported), input_names=names,
                      output_names=["logits"], opset_version=17, dynamo=False,
                      dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names}, "logits": {0: "batch"}})
    test = feeds(16, seed=1)
    pruned = {exported: onnxprune.prune(exported, ratio=args.ratio)}
    print(f"{exported.name}: MACs {pruned[exported].original.macs:,} -> {pruned[exported].pruned.macs:,}")
    for multi_head in (False, True):  # Attention, or MultiHeadAttention after the projections
        fused = args.out / f"bert.optimized{'.mha' if multi_head else ''}.onnx"
        options = FusionOptions("bert")
        options.use_multi_head_attention = multi_head
        optimizer.optimize_model(str(exported), model_type="bert", num_heads=HEADS, hidden_size=HIDDEN, opt_level=0,
                                 optimization_options=options).save_model_to_file(str(fused))
        contrib = Counter(n.op_type for n in onnx.load(fused).graph.node if n.domain == "com.microsoft")
        result = onnxprune.prune(fused, ratio=args.ratio)
        print(f"{fused.name} {dict(sorted(contrib.items()))}: MACs {result.original.macs:,} -> {result.pruned.macs:,}; "
              f"outputs differ from the export's by {np.abs(run(str(exported), test) - run(str(fused), test)).max():.2e}, "
              f"pruned by {np.abs(run(pruned[exported].model, test) - run(result.model, test)).max():.2e}")
    pruned = {exported: pruned[exported].model}
    onnx.save(pruned[exported], args.out / "bert.pruned.onnx")
    refused = optimizer.optimize_model(str(args.out / "bert.pruned.onnx"), model_type="bert", num_heads=0,
                                       hidden_size=0, opt_level=0).model
    contrib = Counter(n.op_type for n in refused.graph.node if n.domain == "com.microsoft")
    heads = [a.i for n in refused.graph.node if n.op_type == "Attention" for a in n.attribute if a.name == "num_heads"]
    print(f"pruned export, optimized again: {dict(sorted(contrib.items()))}, heads {heads}, outputs differ by "
          f"{np.abs(run(refused, test) - run(pruned[exported], test)).max():.2e}")


if __name__ == "__main__":
    main()
