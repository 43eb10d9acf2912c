"""Models that ONNX Runtime's optimizer saved, with its fused contrib ops, prune like the models it read."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import MODELS, feeds_for, relative_error, run, weight
from onnx import TensorProto, helper, numpy_helper

import onnxprune
from onnxprune.contrib import CONTRIB_DOMAIN
from onnxprune.model import load_model


def _ort_optimized(path, folder) -> onnx.ModelProto:
    """The model as ONNX Runtime's extended graph optimisations save it (FusedConv, BiasGelu, ...)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(folder / f"{path.stem}.optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return onnx.load(options.optimized_model_filepath)


def _contrib_ops(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node if n.domain == CONTRIB_DOMAIN}


@pytest.mark.parametrize(("name", "fused"), [
    ("resnet.ts", "FusedConv"), ("mobilenetv2.ts", "FusedConv"), ("fashion_mnist.ts", "FusedGemm"),
    ("yolo.ts", "QuickGelu"), ("gpt.ts", "BiasGelu"), ("vit.ts", "FusedMatMul"),
    ("vit_mha.dynamo", "SkipLayerNormalization"),  # and its q/k/v Gathers fused into a Split and Squeezes
])
def test_an_ort_optimized_fixture_prunes_as_the_original_does(tmp_path, name, fused):
    optimized = _ort_optimized(MODELS / f"{name}.onnx", tmp_path)
    assert fused in _contrib_ops(optimized)
    before = optimized.SerializeToString()
    expected = onnxprune.prune(MODELS / f"{name}.onnx", ratio=0.5)
    result = onnxprune.prune(optimized, ratio=0.5)
    assert optimized.SerializeToString() == before  # the caller's model is left as it was
    assert result.pruned.macs == expected.pruned.macs < result.original.macs
    feeds = feeds_for(optimized)
    for want, got in zip(run(expected.model, feeds), run(result.model, feeds)):
        assert relative_error(want, got) < 1e-4
    # What has a standard op is written as one, and the notes say so; ONNX Runtime fuses it again on load.
    assert _contrib_ops(result.model) <= {"Gelu", "QuickGelu", "FastGelu"}
    assert any(fused in note for note in result.notes) == (fused != "QuickGelu")



def test_a_dry_run_of_an_ort_optimized_model_says_what_loading_split(tmp_path, capsys):
    from onnxprune.cli import main

    optimized = _ort_optimized(MODELS / "resnet.ts.onnx", tmp_path)
    path = tmp_path / "resnet.ts.optimized.onnx"  # where _ort_optimized saved it
    fused = sum(n.op_type == "FusedConv" for n in optimized.graph.node)
    assert main([str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"note: ONNX Runtime's fused ops were split into the standard ops they stand for ({fused} FusedConv)" in out
    # The groups are those of the model it came from, so the kept counts match its dry run.
    expected = onnxprune.find_groups(MODELS / "resnet.ts.onnx")
    assert [(g["channels"], g["kept"]) for g in onnxprune.find_groups(path).groups] == \
        [(g["channels"], g["kept"]) for g in expected.groups]

def _contrib(op: str, inputs: list[str], outputs: list[str], **attrs) -> onnx.NodeProto:
    return helper.make_node(op, inputs, outputs, domain=CONTRIB_DOMAIN, **attrs)


def _model(nodes, inputs: dict[str, list[int]], outputs: list[str], inits, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "fused", [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in inputs.items()],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(CONTRIB_DOMAIN, 1)])
    model.ir_version = 8
    return model


def _vector(name: str, size: int, seed: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(size).astype(np.float32), name)


CASES = {
    "FusedConv Clip with a residual": _model(
        [_contrib("FusedConv", ["x", "w", "b", "z"], ["y"], activation="Clip", activation_params=[0.0, 6.0],
                  pads=[1, 1, 1, 1], kernel_shape=[3, 3])],
        {"x": [2, 4, 6, 6], "z": [2, 8, 6, 6]}, ["y"], [weight("w", (8, 4, 3, 3), 1), _vector("b", 8, 2)]),
    "FusedConv LeakyRelu, no bias": _model(
        [_contrib("FusedConv", ["x", "w"], ["y"], activation="LeakyRelu", activation_params=[0.2], strides=[2, 2])],
        {"x": [2, 4, 6, 6]}, ["y"], [weight("w", (8, 4, 1, 1), 1)]),
    "FusedConv HardSigmoid, depthwise": _model(
        [_contrib("FusedConv", ["x", "w", "b"], ["y"], activation="HardSigmoid", activation_params=[0.3, 0.4], group=4)],
        {"x": [2, 4, 6, 6]}, ["y"], [weight("w", (4, 1, 3, 3), 1), _vector("b", 4, 2)]),
    "FusedGemm Tanh": _model(
        [_contrib("FusedGemm", ["x", "w", "b"], ["y"], activation="Tanh", transB=1, alpha=0.5)],
        {"x": [3, 6]}, ["y"], [weight("w", (5, 6), 1), _vector("b", 5, 2)]),
    "FusedMatMul transB alpha": _model(
        [_contrib("FusedMatMul", ["x", "w"], ["y"], transB=1, alpha=0.25)],
        {"x": [2, 3, 6]}, ["y"], [weight("w", (5, 6), 1)]),
    "BiasGelu": _model(
        [_contrib("BiasGelu", ["x", "b"], ["y"])], {"x": [2, 3, 6]}, ["y"], [_vector("b", 6, 2)]),
    "FastGelu with a bias": _model(
        [_contrib("FastGelu", ["x", "b"], ["y"])], {"x": [2, 3, 6]}, ["y"], [_vector("b", 6, 2)]),
    "SkipLayerNormalization and its sum": _model(
        [_contrib("SkipLayerNormalization", ["x", "s", "g", "beta", "b"], ["y", "", "", "sum"], epsilon=1e-3)],
        {"x": [2, 3, 6], "s": [2, 3, 6]}, ["y", "sum"], [_vector("g", 6, 1), _vector("beta", 6, 2), _vector("b", 6, 3)]),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_fused_contrib_op_is_split_into_standard_ops_that_compute_the_same(case):
    fused = CASES[case]
    unfused = load_model(fused)
    assert _contrib_ops(unfused) <= {"Gelu", "FastGelu"}
    feeds = feeds_for(fused)
    want, got = run(fused, feeds), run(unfused, feeds)
    assert [o.name for o in unfused.graph.output] == [o.name for o in fused.graph.output]
    for a, b in zip(want, got):
        assert a.shape == b.shape and relative_error(a, b) < 1e-5


@pytest.mark.parametrize(("node", "why"), [
    (_contrib("FusedConv", ["x", "w"], ["y"], activation="Softsign"), "an activation with no parameters known"),
    (_contrib("FusedMatMul", ["x", "w"], ["y"], transA=1), "a transposed activation"),
])
def test_a_fusion_without_a_standard_equivalent_is_left_fused(node, why):
    shape = [2, 4, 6, 6] if node.op_type == "FusedConv" else [2, 6, 4]
    w = weight("w", (8, 4, 1, 1) if node.op_type == "FusedConv" else (6, 5), 1)
    fused = _model([node], {"x": shape}, ["y"], [w])
    assert _contrib_ops(load_model(fused)) == {node.op_type}, why


def test_a_model_in_ort_blocked_layout_is_refused_with_what_to_prune_instead(tmp_path):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "all.onnx")
    ort.InferenceSession(str(MODELS / "resnet.ts.onnx"), options, providers=["CPUExecutionProvider"])
    saved = onnx.load(options.optimized_model_filepath)
    result = onnxprune.prune(saved, ratio=0.5)
    if any(n.domain == "com.microsoft.nchwc" for n in saved.graph.node):  # CPUs with AVX2 or AVX-512
        assert result.pruned.macs == result.original.macs
        assert any("saved by ONNX Runtime at the 'all' optimization level" in n for n in result.notes)
    else:  # elsewhere the "all" level adds no blocked layout, and the model prunes as an extended one does
        assert result.pruned.macs < result.original.macs


@pytest.mark.parametrize("name", ["gpt.ts", "vit_mha.dynamo"])
def test_a_transformer_fused_by_ort_transformer_optimizer_prunes_as_the_original_does(tmp_path, name):
    from onnxruntime.transformers import optimizer

    fused = optimizer.optimize_model(str(MODELS / f"{name}.onnx"), model_type="bert", num_heads=3, hidden_size=48,
                                     opt_level=0).model
    assert {"SkipLayerNormalization", "BiasGelu"} <= _contrib_ops(fused)
    expected = onnxprune.prune(MODELS / f"{name}.onnx", ratio=0.5)
    result = onnxprune.prune(fused, ratio=0.5)
    assert result.pruned.macs == expected.pruned.macs < result.original.macs
    feeds = feeds_for(fused)
    for want, got in zip(run(expected.model, feeds), run(result.model, feeds)):
        assert relative_error(want, got) < 1e-4
