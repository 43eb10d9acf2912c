"""Every exported fixture in models/ prunes, runs, and meets the masking oracle."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from helpers import FIXTURES, MODELS, assert_matches_masked, feeds_for, relative_error, run

import onnxprune
from onnxprune.model import export_graph, import_graph, size_names


def test_fixtures_are_present():
    names = {p.name for p in FIXTURES}
    for arch in ("resnet", "mobilenetv2", "se_hardswish", "concat_net", "yolo", "unet", "bn_keep", "shufflenet", "vit",
                 "vit_mha", "gpt", "fashion_mnist", "crnn"):
        assert f"{arch}.ts.onnx" in names and f"{arch}.dynamo.onnx" in names
    assert {"mobilenetv3_keras.tf2onnx.onnx", "mobilenetv3_paddle.paddle2onnx.onnx", "vit_keras.tf2onnx.onnx"} <= names
    assert {"gpt.onnxsim.onnx", "vit_mha.onnxsim.onnx"} <= names


@pytest.mark.parametrize("arch", ["gpt", "vit_mha"])
def test_onnxsim_simplified_fixture_prunes_as_the_export_it_came_from(arch):
    # onnxsim makes each linear layer of a sequence Reshape -> Gemm -> Reshape (back with a shape computed
    # at run time that q, k and v share), and folds the Unsqueeze after nn.MultiheadAttention's packed
    # projection into its Reshape: the same heads and hidden channels prune as in the export.
    simplified = onnxprune.prune(MODELS / f"{arch}.onnxsim.onnx", ratio=0.5, round_to=1, latency=False)
    exported = onnxprune.prune(MODELS / f"{arch}.ts.onnx", ratio=0.5, round_to=1, latency=False)
    assert simplified.pruned.macs == exported.pruned.macs < 0.7 * exported.original.macs

    def pinned(result):
        return sum(g["pinned_reason"] is not None for g in result.report["groups"])
    assert pinned(simplified) == pinned(exported)


@pytest.mark.parametrize("name", ["mobilenetv3_keras.tf2onnx", "mobilenetv3_paddle.paddle2onnx"])
def test_other_exporters_mobilenetv3_prunes_every_block(name):
    # Real exports (random weights) of MobileNetV3-Small by tf2onnx (NHWC with Transposes around the
    # convs, hard-swish as x * relu6(x + 3) / 6, squeeze-excite through Reshapes) and by paddle2onnx:
    # only the groups at the input and at the output stay whole.
    result = onnxprune.prune(MODELS / f"{name}.onnx", ratio=0.5, round_to=1)
    groups = result.report["groups"]
    assert len(groups) >= 25 and sum(g["pinned_reason"] is not None for g in groups) == 2
    assert result.pruned.macs < 0.35 * result.original.macs


def test_keras_multi_head_attention_through_tf2onnx_prunes_its_heads():
    # tf2onnx writes MultiHeadAttention's einsums with the heads merged into the batch by Reshapes whose
    # targets are computed at run time (ReduceProd of two sizes): lifted, the heads prune as the feed-forward
    # layers do; the residual stream stays whole (LayerNormalization normalises over it).
    result = onnxprune.prune(MODELS / "vit_keras.tf2onnx.onnx", ratio=0.5, round_to=1, latency=False)
    free = [g for g in result.report["groups"] if g["pinned_reason"] is None]
    assert sorted((g["channels"], g["kept"]) for g in free) == [(4, 2), (4, 2), (96, 48), (96, 48)]
    assert result.pruned.macs < 0.65 * result.original.macs


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_normalised_graph_computes_the_same(path):
    original = onnx.load(path)
    normalised = export_graph(import_graph(original), original)
    feeds = feeds_for(original)
    for a, b in zip(run(original, feeds), run(normalised, feeds)):
        assert relative_error(a, b) < 1e-6


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.6])
@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_pruned_fixture_matches_masked_original(path, ratio):
    original = onnx.load(path)
    result = onnxprune.prune(path, ratio=ratio, round_to=1)
    assert result.pruned.params < result.original.params
    assert result.pruned.macs < result.original.macs
    onnx.checker.check_model(result.model, full_check=True)
    assert [o.name for o in result.model.graph.output] == [o.name for o in original.graph.output]
    # Sizes that shape inference made up (unk__N, named afresh on each run) are written as unknown.
    graph, declared = result.model.graph, size_names(original)
    assert not {d.dim_param for v in (*graph.value_info, *graph.output) for d in v.type.tensor_type.shape.dim
                if d.dim_param.startswith("unk__") and d.dim_param not in declared}
    assert_matches_masked(original, result.model, result.report)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_default_rounding_keeps_multiples(path):
    result = onnxprune.prune(path)
    unit = result.report["settings"]["round_to"]
    for group in result.report["groups"]:
        if group["kept"] < group["channels"]:
            assert all(m["channels"] >= unit for m in group["members"])
            assert group["kept"] % unit == 0


@pytest.mark.parametrize("exporter", ["ts", "dynamo"])
def test_exactly_zero_channels_are_the_ones_removed(exporter):
    meta = json.loads((MODELS / "zero_channels.json").read_text())
    path = MODELS / f"zero_channels.{exporter}.onnx"
    original = onnx.load(path)
    consumers = {init: n.name for n in import_graph(original).nodes for init in [t.name for t in n.inputs]}
    first, second = meta["layers"]
    fc = consumers["fc.weight"]
    cases = [
        (first, [consumers["conv3.weight"]]),  # pins conv2's and conv3's outputs: only conv1's group prunes
        (second, [consumers["conv1.weight"], fc]),  # pins conv1's and conv3's outputs: only conv2's group prunes
    ]
    feeds = feeds_for(original)
    for layer, exclude in cases:
        result = onnxprune.prune(original, ratio=layer["zero_fraction"], round_to=1, exclude=exclude)
        producer = consumers[f"{layer['layer']}.weight"]
        removed = {n["name"]: n for n in result.report["nodes"]}
        assert removed[producer]["out_removed"] == layer["zero_channel_indices"]
        assert removed[consumers[f"{layer['consumer']}.weight"]]["in_removed"] == layer["zero_channel_indices"]
        for a, b in zip(run(original, feeds), run(result.model, feeds)):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_input_model_object_is_not_modified():
    original = onnx.load(MODELS / "resnet.ts.onnx")
    before = original.SerializeToString()
    onnxprune.prune(original, ratio=0.5, round_to=1)
    assert original.SerializeToString() == before


def test_both_exports_of_a_token_model_prune_the_same_heads():
    # The dynamo export reads the length from the ids, slices the position table to it, and transposes
    # the keys of scaled_dot_product_attention through [-1, T, D]; TorchScript's does neither.
    calib = [{"input": np.random.default_rng(i).integers(0, 64, (16, 16))} for i in range(6)]
    results = [onnxprune.prune(MODELS / f"gpt.{exporter}.onnx", ratio=0.5, calib=calib) for exporter in ("ts", "dynamo")]
    for result in results:
        pruned = {(g["channels"], g["kept"]) for g in result.report["groups"] if g["kept"] < g["channels"]}
        assert pruned == {(3, 2), (96, 48)}  # a head of three in each block, half of each MLP
        for batch, length in ((1, 1), (3, 32), (2, 7)):
            ids = np.random.default_rng(length).integers(0, 64, (batch, length))
            assert run(result.model, {"input": ids})[0].shape == (batch, length, 64)
    assert results[0].pruned.macs == results[1].pruned.macs < 0.65 * results[1].original.macs
    assert abs(results[0].evaluation.outputs[0].relative_l2 - results[1].evaluation.outputs[0].relative_l2) < 1e-3


def test_both_exports_of_a_shufflenet_prune_its_branches_through_the_channel_shuffles():
    # Each unit's Concat is shuffled (Reshape [N, 2, C/2, ..], Transpose, Reshape back); TorchScript also
    # chunks the next unit's input with Slices whose bounds it computes from the shuffled tensor's shape.
    # The trunk's channels become its two shuffle groups (kept whole); the branches' hidden channels prune.
    results = [onnxprune.prune(MODELS / f"shufflenet.{exporter}.onnx", ratio=0.5, round_to=8) for exporter in ("ts", "dynamo")]
    for result in results:
        groups = [(g["channels"], g["kept"], g["pinned_reason"]) for g in result.report["groups"]]
        assert sorted(groups, key=str) == sorted([(3, 3, groups[0][2]), (24, 16, None), (24, 16, None), (2, 2, None),
                                                 (24, 16, None), (48, 24, None), (2, 2, None), (48, 24, None),
                                                 (128, 64, None), (10, 10, groups[-1][2])], key=str)
        for batch in (1, 3):
            x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
            assert run(result.model, {"input": x})[0].shape == (batch, 10)
    assert results[0].pruned.macs == results[1].pruned.macs < 0.7 * results[1].original.macs


def test_both_exports_of_a_crnn_prune_its_lstm_features_and_hidden_units():
    # The dynamo export reorders the LSTM's gates with Slices and Concats of the 28 KB parameters (PyTorch's
    # gate order is not ONNX's): only folded on load are they constant weights whose rows and columns go.
    paths = [MODELS / f"crnn.{exporter}.onnx" for exporter in ("ts", "dynamo")]
    results = [onnxprune.prune(path, ratio=0.5, round_to=1) for path in paths]
    for path, result in zip(paths, results):
        groups = [(g["channels"], g["kept"]) for g in result.report["groups"] if g["pinned_reason"] is None]
        assert groups == [(16, 8), (32, 16), (32, 16)]  # conv channels, the LSTM's features (x 7 rows), hidden units
        lstm = next(n for n in result.model.graph.node if n.op_type == "LSTM")
        assert onnx.helper.get_attribute_value(next(a for a in lstm.attribute if a.name == "hidden_size")) == 16
        assert_matches_masked(onnx.load(path), result.model, result.report)
    assert results[0].pruned.macs == results[1].pruned.macs < 0.5 * results[1].original.macs


@pytest.mark.parametrize("exporter", ["ts", "dynamo"])
def test_multihead_attention_heads_prune_as_written_out_attention(exporter):
    # nn.MultiheadAttention exports its packed q, k, v as Reshape [.., 3, E] -> moves -> Gather, and each
    # as [T, N x heads, D] for a moment: rewritten as a Split and [T, N, heads, D], its heads are pruned
    # exactly as those of the vit fixture, whose attention is written out (same sizes).
    mha = onnxprune.prune(MODELS / f"vit_mha.{exporter}.onnx", ratio=0.5)
    written_out = onnxprune.prune(MODELS / "vit.ts.onnx", ratio=0.5)
    assert {(g["channels"], g["kept"]) for g in mha.report["groups"] if g["kept"] < g["channels"]} == {(3, 2), (96, 48)}
    assert mha.original.macs == written_out.original.macs and mha.pruned.macs == written_out.pruned.macs
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
        assert run(mha.model, {"input": x})[0].shape == (batch, 10)
