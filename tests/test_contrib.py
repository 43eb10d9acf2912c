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
    "FusedMatMul of transposed activations": _model(  # q k^T of attention, as ORT fuses the Transpose
        [_contrib("FusedMatMul", ["a", "b"], ["y"], transA=1, transB=1, alpha=0.5)],
        {"a": [2, 6, 3], "b": [2, 5, 6]}, ["y"], []),
    "FusedMatMul of transposed batches": _model(  # [tokens, batch x heads, head size] moved to the batches
        [_contrib("FusedMatMul", ["a", "b"], ["y"], transBatchA=1, transBatchB=1, transB=1)],
        {"a": [5, 2, 3, 4], "b": [6, 2, 3, 4]}, ["y"], []),
    "FusedMatMul of a transposed batch of a constant": _model(
        [_contrib("FusedMatMul", ["x", "w"], ["y"], transBatchB=1, transB=1, alpha=0.5)],
        {"x": [2, 3, 5, 4]}, ["y"], [weight("w", (6, 2, 3, 4), 1)]),
    "BiasGelu": _model(
        [_contrib("BiasGelu", ["x", "b"], ["y"])], {"x": [2, 3, 6]}, ["y"], [_vector("b", 6, 2)]),
    "FastGelu with a bias": _model(
        [_contrib("FastGelu", ["x", "b"], ["y"])], {"x": [2, 3, 6]}, ["y"], [_vector("b", 6, 2)]),
    "SkipLayerNormalization and its sum": _model(
        [_contrib("SkipLayerNormalization", ["x", "s", "g", "beta", "b"], ["y", "", "", "sum"], epsilon=1e-3)],
        {"x": [2, 3, 6], "s": [2, 3, 6]}, ["y", "sum"], [_vector("g", 6, 1), _vector("beta", 6, 2), _vector("b", 6, 3)]),
    "SkipSimplifiedLayerNormalization and its sum": _model(  # an RMS norm, written as ORT's own op in ONNX's domain
        [_contrib("SkipSimplifiedLayerNormalization", ["x", "s", "g", "b"], ["y", "", "", "sum"], epsilon=1e-3)],
        {"x": [2, 3, 6], "s": [2, 3, 6]}, ["y", "sum"], [_vector("g", 6, 1), _vector("b", 6, 3)]),
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


HIDDEN, HEADS, VOCAB = 32, 4, 30


def _bert(layers: int = 1, mask: str = "embed", qkv_sizes: tuple[int, ...] = (), scale: float = 0.0,
          causal: bool = False, mha: bool = False, opset: int = 17) -> onnx.ModelProto:
    """A BERT-like encoder as ONNX Runtime's transformer optimizer leaves it: EmbedLayerNormalization, then per
    layer Attention (mask: "embed" takes the key counts EmbedLayerNormalization computes, "raw" the [batch,
    keys] mask, "none" none), output MatMul and SkipLayerNormalization, MatMul -> BiasGelu -> MatMul and
    SkipLayerNormalization; a Gemm classifies the first token. Token ids, segments and mask are int64
    inputs cast to int32, as the optimizer writes them."""
    rng = np.random.default_rng(7)

    def init(name: str, *shape: int, spread: float = 0.3, offset: float = 0.0) -> onnx.TensorProto:
        return numpy_helper.from_array((offset + rng.standard_normal(shape) * spread).astype(np.float32), name)

    sizes = list(qkv_sizes) or [HIDDEN] * 3
    nodes = [helper.make_node("Cast", [name], [f"{name}_i32"], to=TensorProto.INT32) for name in ("ids", "segments", "mask")]
    inits = [init("words", VOCAB, HIDDEN, spread=1.0), init("positions", 8, HIDDEN), init("segment_table", 2, HIDDEN),
             init("gamma0", HIDDEN), init("beta0", HIDDEN)]
    nodes.append(_contrib("EmbedLayerNormalization", ["ids_i32", "segments_i32", "words", "positions", "segment_table", "gamma0",
                                                      "beta0", "mask_i32"], ["h0", "key_counts"], epsilon=1e-5))
    attention_mask = {"embed": "key_counts", "raw": "mask_i32", "none": ""}[mask]
    for layer in range(layers):
        x, p = f"h{layer}", f"l{layer}_"
        attrs = {"num_heads": HEADS, **({"qkv_hidden_sizes": sizes} if qkv_sizes else {}), **({"scale": scale} if scale else {}),
                 **({"unidirectional": 1} if causal else {})}
        if mha:  # MultiHeadAttention: the optimizer leaves the projections' MatMuls outside, packs their biases
            nodes += [helper.make_node("MatMul", [x, f"{p}{part}"], [f"{p}{part}_out"]) for part in "qkv"]
            inits += [init(f"{p}{part}", HIDDEN, size) for part, size in zip("qkv", sizes)]
            attention = _contrib("MultiHeadAttention", [p + "q_out", p + "k_out", p + "v_out", p + "qkv_bias", attention_mask],
                                 [p + "context"], **{k: v for k, v in attrs.items() if k != "qkv_hidden_sizes"})
        else:
            attention = _contrib("Attention", [x, p + "qkv", p + "qkv_bias", attention_mask], [p + "context"], **attrs)
        nodes += [
            attention,
            helper.make_node("MatMul", [p + "context", p + "out"], [p + "projected"]),
            _contrib("SkipLayerNormalization", [p + "projected", x, p + "g1", p + "b1", p + "out_bias"], [p + "a"], epsilon=1e-5),
            helper.make_node("MatMul", [p + "a", p + "up"], [p + "up_out"]),
            _contrib("BiasGelu", [p + "up_out", p + "up_bias"], [p + "gelu"]),
            helper.make_node("MatMul", [p + "gelu", p + "down"], [p + "down_out"]),
            _contrib("SkipLayerNormalization", [p + "down_out", p + "a", p + "g2", p + "b2", p + "down_bias"], [f"h{layer + 1}"],
                     epsilon=1e-5),
        ]
        inits += [init(p + "qkv", HIDDEN, sum(sizes)), init(p + "qkv_bias", sum(sizes)), init(p + "out", sizes[2], HIDDEN),
                  init(p + "out_bias", HIDDEN), init(p + "up", HIDDEN, 2 * HIDDEN), init(p + "up_bias", 2 * HIDDEN),
                  init(p + "down", 2 * HIDDEN, HIDDEN), init(p + "down_bias", HIDDEN)]
        inits += [init(f"{p}{n}", HIDDEN, spread=0.1, offset=1.0 if n.startswith("g") else 0.0)  # gammas near 1
                  for n in ("g1", "b1", "g2", "b2")]
    nodes += [helper.make_node("Gather", [f"h{layers}", "first"], ["token"], axis=1),
              helper.make_node("Gemm", ["token", "classes", "class_bias"], ["logits"])]
    inits += [numpy_helper.from_array(np.array(0, np.int64), "first"), init("classes", HIDDEN, 3), init("class_bias", 3)]
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "tokens"]) for name in ("ids", "segments", "mask")]
    graph = helper.make_graph(nodes, "bert", inputs, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(CONTRIB_DOMAIN, 1)])
    model.ir_version = 8
    return model


def _bert_feeds(batch: int = 4, tokens: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """Token ids and segments, and a mask whose rows are right-padded to different lengths."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, tokens + 1, batch)
    mask = (np.arange(tokens)[None, :] < lengths[:, None]).astype(np.int64)
    return {"ids": rng.integers(0, VOCAB, (batch, tokens)), "segments": rng.integers(0, 2, (batch, tokens)), "mask": mask}


BERT_CASES = {
    "key counts from EmbedLayerNormalization": {},
    "a raw mask": {"mask": "raw"},
    "no mask, a scale": {"mask": "none", "scale": 0.5},
    "a wider value projection": {"qkv_sizes": (HIDDEN, HIDDEN, 2 * HIDDEN)},
    "causal (unidirectional), a raw mask": {"causal": True, "mask": "raw"},
    "MultiHeadAttention, key counts": {"mha": True},
    "MultiHeadAttention, a raw mask, a wider value projection": {"mha": True, "mask": "raw",
                                                               "qkv_sizes": (HIDDEN, HIDDEN, 2 * HIDDEN)},
}


@pytest.mark.parametrize("case", BERT_CASES, ids=list(BERT_CASES))
def test_attention_and_embed_layer_norm_are_split_into_standard_ops_that_compute_the_same(case):
    fused = _bert(**BERT_CASES[case])
    fused.graph.output.append(helper.make_tensor_value_info("h1", TensorProto.FLOAT, None))  # every token's state
    unfused = load_model(fused)
    assert _contrib_ops(unfused) == {"Gelu"}  # BiasGelu's activation (no standard Gelu before opset 20)
    for tokens in (6, 3):  # the positions, key counts and causal mask follow the input's length
        feeds = _bert_feeds(tokens=tokens)
        for want, got in zip(run(fused, feeds), run(unfused, feeds)):
            assert want.shape == got.shape and relative_error(want, got) < 1e-5


@pytest.mark.parametrize("mha", [False, True], ids=["Attention", "MultiHeadAttention"])
def test_a_bert_fused_by_ort_transformer_optimizer_prunes_its_heads_and_hidden_units(mha):
    # Its Attention and EmbedLayerNormalization outputs had no shape, which pinned every group: nothing pruned.
    fused = _bert(layers=2, mha=mha)
    result = onnxprune.prune(fused, ratio=0.5, calib=[_bert_feeds(batch=16, seed=s) for s in range(4)])
    assert result.pruned.macs < 0.7 * result.original.macs
    split = [note for note in result.notes if note.startswith("ONNX Runtime's fused ops were split")]
    assert ("2 MultiHeadAttention" if mha else "2 Attention") in split[0] and "1 EmbedLayerNormalization" in split[0]
    assert "prune the model the optimizer read and optimize the pruned one" in split[0]
    heads = [numpy_helper.to_array(i)[2] for n in result.model.graph.node if n.op_type == "Reshape"
             for i in result.model.graph.initializer if i.name == n.input[1] and numpy_helper.to_array(i).size == 4]
    assert heads and all(h < HEADS for h in heads)  # whole heads went from q, k and v alike
    feeds = _bert_feeds(batch=8, seed=9)
    got = run(result.model, feeds)[0]
    assert got.shape == run(fused, feeds)[0].shape and np.isfinite(got).all()


@pytest.mark.parametrize(("options", "fused"), [
    # Before opset 14 a causal mask has no Trilu, nor before 17 LayerNormalization a standard op.
    ({"causal": True, "opset": 13}, {"Attention", "EmbedLayerNormalization", "SkipLayerNormalization"}),
    ({"causal": True, "mha": True}, {"MultiHeadAttention"}),  # a causal one is left fused
], ids=["Attention before opset 14", "causal MultiHeadAttention"])
def test_an_attention_left_fused_keeps_the_rest_of_the_model_prunable(options, fused):
    # Their outputs are sized from their inputs (ONNX's shape inference knows no contrib op).
    model = _bert(layers=2, **options)
    assert fused <= _contrib_ops(load_model(model))
    result = onnxprune.prune(model, ratio=0.5)
    assert result.pruned.macs < result.original.macs
    feeds = _bert_feeds(seed=3)
    assert run(result.model, feeds)[0].shape == run(model, feeds)[0].shape


@pytest.mark.parametrize(("node", "why"), [
    (_contrib("FusedConv", ["x", "w"], ["y"], activation="Softsign"), "an activation with no parameters known"),
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
    before = fused.SerializeToString()  # the optimizer imports no com.microsoft opset; loading added one to it
    expected = onnxprune.prune(MODELS / f"{name}.onnx", ratio=0.5)
    result = onnxprune.prune(fused, ratio=0.5)
    assert fused.SerializeToString() == before
    assert result.pruned.macs == expected.pruned.macs < result.original.macs
    feeds = feeds_for(fused)
    for want, got in zip(run(expected.model, feeds), run(result.model, feeds)):
        assert relative_error(want, got) < 1e-4


@pytest.mark.parametrize("norm", ["SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization"])
def test_an_rms_norm_that_onnx_cannot_size_keeps_the_channels_after_it_prunable(norm):
    # ONNX Runtime's optimizer writes RMS norms as these (the first in ONNX's own domain, which ONNX's
    # shape inference does not know): their output was unsized, which pinned every group after them.
    if norm == "SimplifiedLayerNormalization":
        norm_node = helper.make_node(norm, ["h", "gamma"], ["n"], axis=-1, epsilon=1e-5)
    else:
        norm_node = _contrib(norm, ["h", "x", "gamma"], ["n"], epsilon=1e-5)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["h"]), norm_node,
             helper.make_node("MatMul", ["n", "w3"], ["b"]), helper.make_node("Relu", ["b"], ["s"]),
             helper.make_node("MatMul", ["s", "w4"], ["y"])]
    inits = [weight("w1", (16, 32), 1), weight("w2", (32, 16), 2), _vector("gamma", 16, 3), weight("w3", (16, 32), 4),
             weight("w4", (32, 4), 5)]
    model = _model(nodes, {"x": ["batch", 5, 16]}, ["y"], inits)
    # The checker fails the original first on its output's missing shape, which the pruned model gets, and
    # then on SimplifiedLayerNormalization, which has no ONNX schema: an op of the original, not a fault.
    result = onnxprune.prune(model, ratio=0.5, round_to=1)
    kept = {i.name: list(i.dims) for i in result.model.graph.initializer}
    assert kept["w1"] == [16, 16] and kept["w4"] == [16, 4]  # both hidden layers lose half their units
    feeds = feeds_for(model)
    assert run(result.model, feeds)[0].shape == run(model, feeds)[0].shape
    assert _contrib_ops(load_model(model)) == set()  # the skip variant is split into an Add and the norm
    if norm == "SimplifiedLayerNormalization":
        stream = next(g for g in result.report["groups"] if "h" in [m["tensor"] for m in g["members"]])
        assert "it normalises over the channel axis (an RMS norm of the channels)" in stream["pinned_reason"]


def test_a_fused_matmul_after_an_rms_norm_that_onnx_cannot_size_is_split():
    # A LLaMA block as ONNX Runtime saves it: RMS norm (SimplifiedLayerNormalization), then q @ k^T * scale
    # as a FusedMatMul. ONNX's inference stopped at the norm, which left k's rank unknown and the
    # FusedMatMul (and the attention's channels) fused; the norm's input shape now passes on.
    nodes = [helper.make_node("SimplifiedLayerNormalization", ["x", "gamma"], ["n"], axis=-1, epsilon=1e-5)]
    nodes += [helper.make_node("MatMul", ["n", f"w{p}"], [p]) for p in "qkv"]
    nodes += [_contrib("FusedMatMul", ["q", "k"], ["scores"], transB=1, alpha=0.5),
              helper.make_node("Softmax", ["scores"], ["attn"], axis=-1), helper.make_node("MatMul", ["attn", "v"], ["c"]),
              helper.make_node("MatMul", ["c", "wo"], ["y"])]
    inits = [_vector("gamma", 16, 1), *(weight(f"w{p}", (16, 8), i) for i, p in enumerate("qkv", 2)), weight("wo", (8, 4), 5)]
    model = _model(nodes, {"x": ["batch", 5, 16]}, ["y"], inits)
    assert _contrib_ops(load_model(model)) == set()
    result = onnxprune.prune(model, ratio=0.5, round_to=1)
    kept = {i.name: list(i.dims) for i in result.model.graph.initializer}
    assert kept["wq"] == [16, 4] and kept["wk"] == [16, 4] and kept["wo"] == [4, 4]
    feeds = feeds_for(model)
    assert run(result.model, feeds)[0].shape == run(model, feeds)[0].shape


def test_fused_matmuls_that_wait_on_each_other_and_on_an_activation_are_all_split():
    # YOLO11's attention as ONNX Runtime saves it: (q^T k) * scale and v attn^T as FusedMatMuls, the second
    # reading a Softmax of the first (sized only once the first is split), after a QuickGelu (SiLU) whose
    # output ONNX Runtime saved with a type but no shape.
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), _contrib("QuickGelu", ["h"], ["g"], alpha=1.0)]
    nodes += [helper.make_node("MatMul", ["g", f"w{p}"], [p]) for p in "qkv"]
    nodes += [_contrib("FusedMatMul", ["q", "k"], ["scores"], transB=1, alpha=0.5),
              helper.make_node("Softmax", ["scores"], ["attn"], axis=-1),
              helper.make_node("Transpose", ["v"], ["vt"], perm=[0, 2, 1]),
              _contrib("FusedMatMul", ["vt", "attn"], ["c"], transB=1),  # v^T attn^T: [batch, 8, tokens]
              helper.make_node("Transpose", ["c"], ["ct"], perm=[0, 2, 1]), helper.make_node("MatMul", ["ct", "wo"], ["y"])]
    inits = [weight("w", (16, 16), 1), *(weight(f"w{p}", (16, 8), i) for i, p in enumerate("qkv", 2)), weight("wo", (8, 4), 5)]
    model = _model(nodes, {"x": ["batch", 5, 16]}, ["y"], inits)
    model.graph.value_info.append(helper.make_tensor_value_info("g", TensorProto.FLOAT, None))
    unfused = load_model(model)
    assert _contrib_ops(unfused) == {"QuickGelu"}
    feeds = feeds_for(model)
    assert relative_error(run(model, feeds)[0], run(unfused, feeds)[0]) < 1e-5
    result = onnxprune.prune(model, ratio=0.5, round_to=1)
    kept = {i.name: list(i.dims) for i in result.model.graph.initializer}
    assert kept["w"] == [16, 8] and kept["wq"] == [8, 4] and kept["wv"] == [8, 4]


def _timm_attention(fused: bool) -> onnx.ModelProto:
    """timm's ViT attention: a packed projection reshaped to [3, batch, heads, tokens, size], q, k and v
    Gathered from it, (q @ k^T) * scale, softmax, @ v, heads merged, output projection. ``fused``: as
    ONNX Runtime saves it, the Transpose of k and the scale fused into a FusedMatMul."""
    hidden, heads = 32, 4
    nodes = [helper.make_node("MatMul", ["x", "qkv"], ["p"]), helper.make_node("Reshape", ["p", "split"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[2, 0, 3, 1, 4])]
    nodes += [helper.make_node("Gather", ["t", name], [f"{name}_h"], axis=0) for name in ("q", "k", "v")]
    if fused:
        nodes.append(_contrib("FusedMatMul", ["q_h", "k_h"], ["scores"], transB=1, alpha=0.25))
    else:
        nodes += [helper.make_node("Transpose", ["k_h"], ["k_t"], perm=[0, 1, 3, 2]),
                  helper.make_node("MatMul", ["q_h", "k_t"], ["raw"]), helper.make_node("Mul", ["raw", "scale"], ["scores"])]
    nodes += [helper.make_node("Softmax", ["scores"], ["attn"], axis=-1), helper.make_node("MatMul", ["attn", "v_h"], ["c"]),
              helper.make_node("Transpose", ["c"], ["ct"], perm=[0, 2, 1, 3]), helper.make_node("Reshape", ["ct", "merge"], ["m"]),
              helper.make_node("MatMul", ["m", "proj"], ["y"])]
    inits = [weight("qkv", (hidden, 3 * hidden), 1), weight("proj", (hidden, hidden), 2),
             numpy_helper.from_array(np.array([0, 0, 3, heads, hidden // heads], np.int64), "split"),
             numpy_helper.from_array(np.array([0, 0, hidden], np.int64), "merge"),
             numpy_helper.from_array(np.array(0.25, np.float32), "scale")]
    inits += [numpy_helper.from_array(np.array(i, np.int64), name) for i, name in enumerate("qkv")]
    return _model(nodes, {"x": [2, 5, hidden]}, ["y"], inits)


def test_a_fused_matmul_of_a_transposed_activation_is_split_where_inference_gives_its_rank():
    # timm's q @ k.transpose(-2, -1): ONNX Runtime saves no activation shapes, so the rank of k comes from
    # ONNX's shape inference; the heads then prune as in the model it came from.
    fused, plain = _timm_attention(True), _timm_attention(False)
    assert _contrib_ops(load_model(fused)) == set()
    expected, result = onnxprune.prune(plain, ratio=0.5, round_to=1), onnxprune.prune(fused, ratio=0.5, round_to=1)
    assert result.pruned.macs == expected.pruned.macs < result.original.macs
    feeds = feeds_for(fused)
    assert relative_error(run(expected.model, feeds)[0], run(result.model, feeds)[0]) < 1e-5


def test_a_fused_matmul_whose_rank_only_folded_constants_tell_is_split():
    # DINOv3's rotary table as TorchScript writes it and ONNX Runtime saves it: Ifs on static sizes, whose
    # branches give different ranks, so ONNX's inference gives no shape after them. Here such an If picks
    # k's reshape target; once folded, k's rank is known and q @ k^T (a FusedMatMul) splits, which let the
    # heads prune (they stayed whole: "no channel rule for op type 'FusedMatMul'").
    def branch(name: str, target: list[int]) -> onnx.GraphProto:
        out = f"{name}_target"
        return helper.make_graph([helper.make_node("Constant", [], [out], value=numpy_helper.from_array(
            np.array(target, np.int64)))], name, [], [helper.make_tensor_value_info(out, TensorProto.INT64, [len(target)])])

    nodes = [helper.make_node("Greater", ["two", "one"], ["static_test"]),
             helper.make_node("If", ["static_test"], ["k_target"], then_branch=branch("heads", [0, 5, 2, 4]),
                              else_branch=branch("flat", [0, 40])),
             helper.make_node("MatMul", ["x", "wq"], ["q_flat"]), helper.make_node("Reshape", ["q_flat", "heads"], ["q_r"]),
             helper.make_node("Transpose", ["q_r"], ["q"], perm=[0, 2, 1, 3]),
             helper.make_node("MatMul", ["x", "wk"], ["k_flat"]), helper.make_node("Reshape", ["k_flat", "k_target"], ["k_r"]),
             helper.make_node("Transpose", ["k_r"], ["k"], perm=[0, 2, 1, 3]),
             helper.make_node("MatMul", ["x", "wv"], ["v_flat"]), helper.make_node("Reshape", ["v_flat", "heads"], ["v_r"]),
             helper.make_node("Transpose", ["v_r"], ["v"], perm=[0, 2, 1, 3]),
             _contrib("FusedMatMul", ["q", "k"], ["scores"], transB=1, alpha=0.5),
             helper.make_node("Softmax", ["scores"], ["attn"], axis=-1), helper.make_node("MatMul", ["attn", "v"], ["c"]),
             helper.make_node("Transpose", ["c"], ["ct"], perm=[0, 2, 1, 3]), helper.make_node("Reshape", ["ct", "merge"], ["m"]),
             helper.make_node("MatMul", ["m", "wo"], ["y"])]
    inits = [*(weight(f"w{p}", (16, 8), i) for i, p in enumerate("qkv", 2)), weight("wo", (8, 4), 5),
             numpy_helper.from_array(np.array([0, 5, 2, 4], np.int64), "heads"),
             numpy_helper.from_array(np.array([0, 5, 8], np.int64), "merge"),
             numpy_helper.from_array(np.array(2, np.int64), "two"), numpy_helper.from_array(np.array(1, np.int64), "one")]
    model = _model(nodes, {"x": ["batch", 5, 16]}, ["y"], inits)
    unfused = load_model(model)
    assert _contrib_ops(unfused) == set()
    feeds = feeds_for(model)
    assert relative_error(run(model, feeds)[0], run(unfused, feeds)[0]) < 1e-5
    result = onnxprune.prune(model, ratio=0.5, round_to=1)
    kept = {i.name: list(i.dims) for i in result.model.graph.initializer}
    assert kept["wq"] == [16, 4] and kept["wv"] == [16, 4] and kept["wo"] == [4, 4]
    assert run(result.model, feeds)[0].shape == run(model, feeds)[0].shape
