"""Quantized models in the QDQ format (ONNX Runtime's quantize_static): int8 weights and int32 biases behind
DequantizeLinear, activations through QuantizeLinear and DequantizeLinear pairs; and models in the operator
format (static and dynamic quantization), which are written in the QDQ format on load."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from helpers import assert_matches_masked, conv, make_model, relative_error, run
from helpers import weight as seeded_weight
from onnx import helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

import onnxprune
from onnxprune.calibrate import consumer_inputs
from onnxprune.candidates import CandidateBuilder, Loaded
from onnxprune.cli import main
from onnxprune.model import load_model, param_values, read_model, store_param

MODELS = Path(__file__).resolve().parent.parent / "models"


class _Batches(CalibrationDataReader):
    def __init__(self, name: str, x: np.ndarray) -> None:
        self.batches = iter([{name: x[i:i + 16]} for i in range(0, len(x), 16)])

    def get_next(self) -> dict | None:
        return next(self.batches, None)


def quantized(model: onnx.ModelProto | Path, x: np.ndarray, tmp_path: Path, per_channel: bool,
              quant_format: QuantFormat = QuantFormat.QDQ) -> Path:
    """``model`` quantized by ONNX Runtime on the samples ``x`` (int8 weights, uint8 activations)."""
    source = tmp_path / "float.onnx"
    onnx.save(model, source) if isinstance(model, onnx.ModelProto) else source.write_bytes(model.read_bytes())
    name = onnx.load(source).graph.input[0].name
    target = tmp_path / f"quantized_{'pc' if per_channel else 'pt'}_{quant_format.name}.onnx"
    quantize_static(str(source), str(target), _Batches(name, x), quant_format=quant_format, per_channel=per_channel,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return target


def conv_chain() -> onnx.ModelProto:
    """x [N, 3, 8, 8] -> conv (8) -> Relu -> conv (8) -> Relu -> conv (4) -> y."""
    nodes, inits = [], []
    for index, (c_in, c_out, x, y) in enumerate(((3, 8, "x", "a"), (8, 8, "ar", "b"), (8, 4, "br", "y"))):
        node, weights = conv(f"conv{index}", x, y, c_in, c_out, seed=index + 1)
        nodes.append(node)
        inits += weights
        if y != "y":
            nodes.append(helper.make_node("Relu", [y], [f"{y}r"], name=f"relu{index}"))
    return make_model(nodes, {"x": ["N", 3, 8, 8]}, ["y"], inits, opset=17)


def dequantized_weights(model: onnx.ModelProto) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The integer constant and scale of every DequantizeLinear of a constant, by its output name."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {n.output[0]: (inits[n.input[0]], inits[n.input[1]])
            for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}


@pytest.mark.parametrize("per_channel", [True, False])
def test_a_qdq_model_is_pruned_keeping_int8_weights_and_slicing_per_channel_scales(tmp_path, per_channel):
    x = np.random.default_rng(0).standard_normal((64, 3, 8, 8)).astype(np.float32)
    path = quantized(conv_chain(), x, tmp_path, per_channel)
    original = onnx.load(path)
    result = onnxprune.prune(str(path), ratio=0.5, round_to=1, compensate=False)
    # the oracle: the original with the removed channels' consumer weights zeroed computes the same
    assert_matches_masked(original, result.model, result.report)
    kept = {g["members"][0]["tensor"]: g["kept"] for g in result.report["groups"] if g["pinned_reason"] is None}
    assert sorted(kept.values()) == [4, 4]
    before, after = dequantized_weights(original), dequantized_weights(result.model)
    for name, (weight, scale) in after.items():
        assert weight.dtype == before[name][0].dtype  # int8 weights, int32 biases, as they were
        one_scale = before[name][1].size == 1  # per tensor: left as it was
        assert scale.shape == (before[name][1].shape if one_scale else (weight.shape[0],))
        assert one_scale != per_channel
    assert sum(w.shape[0] for w, _ in after.values() if w.ndim == 4) == 4 + 4 + 4
    assert result.report["original"]["params"] > result.report["pruned"]["params"] > 0
    # ONNX Runtime still fuses every pruned conv with its Q/DQ pairs into an integer conv
    assert fused_ops(original, tmp_path)["QLinearConv"] == fused_ops(result.model, tmp_path)["QLinearConv"] == 3


def run_fused(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run at ONNX Runtime's extended optimisation level, which fuses QDQ into integer ops."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feeds)


def fused_ops(model: onnx.ModelProto, folder: Path) -> Counter:
    """Op counts of ``model`` as ONNX Runtime's optimisations leave it (the extended level, which fuses QDQ)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(folder / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return Counter(node.op_type for node in onnx.load(folder / "optimized.onnx").graph.node)


def test_compensation_of_a_qdq_model_requantizes_its_weights(tmp_path):
    data = np.load(MODELS / "fashion_mnist_test.npz")
    x = ((data["x"][:600].astype(np.float32) / 255 - 0.2860) / 0.3530)[:, None]
    path = quantized(MODELS / "fashion_mnist.ts.onnx", x[:64], tmp_path, per_channel=True)
    calib = [{"input": x, "labels": data["labels"][:600].astype(np.int64)}]
    errors, agreement = {}, {}
    for compensate in (True, False):
        result = onnxprune.prune(str(path), target_macs=0.5, calib=calib, compensate=compensate)
        fidelity = result.report["fidelity"]
        errors[compensate] = max(o["relative_l2"] for o in fidelity["outputs"])
        agreement[compensate] = fidelity["top1_agreement"]
        for weight, _ in dequantized_weights(result.model).values():
            assert weight.dtype in (np.int8, np.int32)
    assert errors[True] < errors[False] and agreement[True] > agreement[False]
    assert agreement[True] >= 0.9


def test_per_channel_activation_scales_on_the_channel_axis_are_sliced():
    # conv -> QuantizeLinear / DequantizeLinear with one scale per channel (axis 1) -> conv
    first, inits1 = conv("conv1", "x", "a", 3, 8, seed=1)
    last, inits2 = conv("conv2", "d", "y", 8, 4, seed=2)
    scales = [numpy_helper.from_array(np.linspace(0.02, 0.05, 8).astype(np.float32), "scale"),
              numpy_helper.from_array(np.full(8, 128, np.uint8), "zero")]
    nodes = [first, helper.make_node("QuantizeLinear", ["a", "scale", "zero"], ["q"], name="quant", axis=1),
             helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["d"], name="dequant", axis=1), last]
    model = make_model(nodes, {"x": ["N", 3, 8, 8]}, ["y"], inits1 + scales + inits2)
    result = onnxprune.prune(model, ratio=0.5, round_to=1, compensate=False)
    assert_matches_masked(model, result.model, result.report)
    graph = gs.import_onnx(result.model)
    for node in graph.nodes:
        if node.op in ("QuantizeLinear", "DequantizeLinear"):
            assert node.inputs[1].values.shape == node.inputs[2].values.shape == (4,)


def test_per_channel_activation_scales_on_another_axis_pin_the_group():
    first, inits1 = conv("conv1", "x", "a", 3, 8, seed=1)
    last, inits2 = conv("conv2", "d", "y", 8, 4, seed=2)
    scales = [numpy_helper.from_array(np.full(8, 0.05, np.float32), "scale")]  # one per row (axis 2)
    nodes = [first, helper.make_node("QuantizeLinear", ["a", "scale"], ["q"], name="quant", axis=2),
             helper.make_node("DequantizeLinear", ["q", "scale"], ["d"], name="dequant", axis=2), last]
    model = make_model(nodes, {"x": ["N", 3, 8, 8]}, ["y"], inits1 + scales + inits2)
    result = onnxprune.prune(model, ratio=0.5, round_to=1)
    group = next(g for g in result.report["groups"] if "a" in [m["tensor"] for m in g["members"]])
    assert "per channel on axis 2" in group["pinned_reason"] and group["kept"] == 8


def test_stored_weights_are_requantized_on_their_scales_and_clipped():
    scale = np.array([0.1, 0.01], np.float32)
    graph = gs.Graph()
    weight = gs.Constant("w", np.array([[10, -20], [30, 127]], np.int8))
    node = gs.Node("DequantizeLinear", inputs=[weight, gs.Constant("s", scale), gs.Constant("z", np.zeros(2, np.int8))],
                   outputs=[gs.Variable("w_f")], attrs={"axis": 0})
    graph.nodes.append(node)
    np.testing.assert_allclose(param_values(node, 0), [[1.0, -2.0], [0.3, 1.27]], rtol=1e-6)
    store_param(node, 0, np.array([[1.04, -2.0], [0.3, 5.0]]))  # 5.0 is beyond 127 steps of 0.01
    assert node.inputs[0].values.dtype == np.int8
    np.testing.assert_array_equal(node.inputs[0].values, [[10, -20], [30, 127]])
    store_param(node, 0, np.array([[1.26, 0.0], [-0.5, 0.0]]))
    np.testing.assert_array_equal(node.inputs[0].values, [[13, 0], [-50, 0]])


@pytest.mark.parametrize("per_channel", [True, False])
def test_an_operator_format_model_is_pruned_in_its_qdq_form_which_fuses_back(tmp_path, per_channel):
    # QLinearConv written as DequantizeLinear -> Conv (its int32 bias dequantized on the input scale times
    # each weight scale) -> QuantizeLinear is fused back into the same integer convs, so computes exactly
    # what they compute, and prunes as the QDQ model does.
    x = np.random.default_rng(0).standard_normal((64, 3, 8, 8)).astype(np.float32)
    path = quantized(conv_chain(), x, tmp_path, per_channel, quant_format=QuantFormat.QOperator)
    original = onnx.load(path)
    assert Counter(n.op_type for n in original.graph.node)["QLinearConv"] == 3
    written = read_model(str(path))
    assert written.written_as_qdq == ("QLinearConv",) * 3
    assert not {n.op_type for n in written.model.graph.node} & {"QLinearConv"}
    np.testing.assert_array_equal(run_fused(written.model, {"x": x[:4]})[0], run_fused(original, {"x": x[:4]})[0])
    result = onnxprune.prune(str(path), ratio=0.5, round_to=1, compensate=False)
    assert_matches_masked(written.model, result.model, result.report)
    assert sorted(g["kept"] for g in result.report["groups"] if g["pinned_reason"] is None) == [4, 4]
    assert any("QDQ format" in note for note in result.report["notes"])
    assert fused_ops(original, tmp_path)["QLinearConv"] == fused_ops(result.model, tmp_path)["QLinearConv"] == 3


def test_an_operator_format_classifier_with_integer_gemm_and_add_is_compensated(tmp_path):
    # The Fashion-MNIST fixture quantized to QLinearConv, QLinearAdd and QGemm: pruned to half its MACs as
    # the float model is, and compensation recovers its accuracy.
    data = np.load(MODELS / "fashion_mnist_test.npz")
    x = ((data["x"][:600].astype(np.float32) / 255 - 0.2860) / 0.3530)[:, None]
    path = quantized(MODELS / "fashion_mnist.ts.onnx", x[:64], tmp_path, per_channel=True, quant_format=QuantFormat.QOperator)
    assert {"QLinearConv", "QLinearAdd", "QGemm"} <= {n.op_type for n in onnx.load(path).graph.node}
    calib = [{"input": x, "labels": data["labels"][:600].astype(np.int64)}]
    results = {compensate: onnxprune.prune(str(path), target_macs=0.5, calib=calib, compensate=compensate)
               for compensate in (True, False)}
    float_result = onnxprune.prune(MODELS / "fashion_mnist.ts.onnx", target_macs=0.5, calib=calib)
    assert results[True].pruned.macs == float_result.pruned.macs
    agreement = {compensate: result.report["fidelity"]["top1_agreement"] for compensate, result in results.items()}
    assert agreement[True] >= 0.9 > agreement[False]
    fused = fused_ops(results[True].model, tmp_path)
    assert fused["QLinearConv"] == 5 and fused["QGemm"] == 2 and fused["QLinearAdd"] == 1


def test_an_operator_format_transformer_prunes_its_heads_as_the_float_model_does(tmp_path):
    # The vit fixture quantized: its attention in QLinearMatMul, QLinearSoftmax and QLinearMul.
    x = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    path = quantized(MODELS / "vit.ts.onnx", x, tmp_path, per_channel=True, quant_format=QuantFormat.QOperator)
    assert {"QLinearMatMul", "QLinearSoftmax"} <= {n.op_type for n in onnx.load(path).graph.node}
    result = onnxprune.prune(str(path), ratio=0.5, round_to=1, latency=False)
    float_result = onnxprune.prune(MODELS / "vit.ts.onnx", ratio=0.5, round_to=1, latency=False)
    assert result.pruned.macs == float_result.pruned.macs < 0.7 * result.original.macs
    assert fused_ops(result.model, tmp_path)["QLinearMatMul"] == fused_ops(onnx.load(path), tmp_path)["QLinearMatMul"]


def test_a_qdq_multihead_attention_prunes_its_heads_as_the_float_model_does(tmp_path):
    # nn.MultiheadAttention's TorchScript export merges the batch with the heads for a moment (Reshape,
    # Transpose, Reshape); quantized, a QDQ pair follows each of those, and the heads were kept while the
    # dimensions within them went (1,720,800 MACs against the float model's 2,048,480). The pairs round each
    # element alike, so they now follow the rewritten Reshape and Transpose.
    x = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    path = quantized(MODELS / "vit_mha.ts.onnx", x, tmp_path, per_channel=True)
    result = onnxprune.prune(str(path), ratio=0.5, round_to=1, latency=False)
    float_result = onnxprune.prune(MODELS / "vit_mha.ts.onnx", ratio=0.5, round_to=1, latency=False)
    assert result.pruned.macs == float_result.pruned.macs
    assert [g["channels"] for g in result.report["groups"] if g["pinned_reason"] is None] == [3, 96, 3, 96]
    assert_matches_masked(onnx.load(path), result.model, result.report)


def _old_integer_convs(weight_scales: list[float]) -> onnx.ModelProto:
    """An opset-12 model as older int8 exports are: QuantizeLinear -> two QLinearConvs (8, then 4 channels,
    a scale per weight or per output channel) -> DequantizeLinear."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array(v, dtype), n) for n, v, dtype in
             (("x_scale", 0.05, np.float32), ("x_zero", 128, np.uint8), ("a_scale", 0.1, np.float32),
              ("a_zero", 0, np.uint8), ("y_scale", 0.2, np.float32), ("y_zero", 128, np.uint8))]
    for name, c_in, c_out in (("w1", 3, 8), ("w2", 8, 4)):
        scales = weight_scales if len(weight_scales) == 1 else weight_scales[:c_out]
        inits += [numpy_helper.from_array(rng.integers(-100, 100, (c_out, c_in, 3, 3)).astype(np.int8), name),
                  numpy_helper.from_array(np.array(scales if len(scales) > 1 else scales[0], np.float32), f"{name}_scale"),
                  numpy_helper.from_array(np.zeros(len(scales), np.int8) if len(scales) > 1 else np.array(0, np.int8), f"{name}_zero"),
                  numpy_helper.from_array(rng.integers(-500, 500, c_out).astype(np.int32), f"{name}_bias")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"]),
             helper.make_node("QLinearConv", ["xq", "x_scale", "x_zero", "w1", "w1_scale", "w1_zero", "a_scale", "a_zero",
                                              "w1_bias"], ["aq"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("QLinearConv", ["aq", "a_scale", "a_zero", "w2", "w2_scale", "w2_zero", "y_scale", "y_zero",
                                              "w2_bias"], ["yq"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("DequantizeLinear", ["yq", "y_scale", "y_zero"], ["y"])]
    return make_model(nodes, {"x": ["N", 3, 8, 8]}, ["y"], inits, opset=12)


def test_an_old_opset_with_a_scale_per_weight_is_written_as_qdq_and_pruned(tmp_path):
    # Before opset 13 DequantizeLinear takes one scale: enough for weights quantized per tensor.
    model = _old_integer_convs([0.01])
    written = read_model(model)
    assert written.written_as_qdq == ("QLinearConv", "QLinearConv")
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(run_fused(written.model, {"x": x})[0], run_fused(model, {"x": x})[0])
    # Unfused, op by op, the float conv rounds a few ties the other way: one step of the output scale.
    np.testing.assert_allclose(run(written.model, {"x": x})[0], run(model, {"x": x})[0], rtol=0, atol=0.2 + 1e-6)
    result = onnxprune.prune(model, ratio=0.5, round_to=1)
    assert [g["kept"] for g in result.report["groups"] if g["pinned_reason"] is None] == [4]
    assert fused_ops(result.model, tmp_path)["QLinearConv"] == 2


def test_a_scale_per_channel_before_opset_13_is_refused_with_a_reason(tmp_path, capsys):
    source, output = tmp_path / "old.onnx", tmp_path / "out.onnx"
    onnx.save(_old_integer_convs([0.01 * (1 + i) for i in range(8)]), source)
    assert main([str(source), "-o", str(output)]) == 0
    message = capsys.readouterr()
    assert "QLinearConv" in message.out + message.err and "opset 13" in message.out + message.err
    assert not output.exists()


def dynamically_quantized(model: onnx.ModelProto | Path, tmp_path: Path, per_channel: bool) -> Path:
    """``model`` quantized by ONNX Runtime's quantize_dynamic (int8 weights; activations quantized at run
    time by DynamicQuantizeLinear, products in ConvInteger and MatMulInteger)."""
    source, target = tmp_path / "float.onnx", tmp_path / f"dynamic_{'pc' if per_channel else 'pt'}.onnx"
    onnx.save(model, source) if isinstance(model, onnx.ModelProto) else source.write_bytes(model.read_bytes())
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=per_channel)
    return target


@pytest.mark.parametrize("per_channel", [True, False])
def test_a_dynamically_quantized_model_is_pruned_in_its_qdq_form(tmp_path, per_channel):
    # ConvInteger -> Cast -> Mul by the input's scale times the weight's is the Conv of the dequantized
    # input and weight: written so, its channels prune as the QDQ model's do. The masking oracle holds
    # within a step of the quantization: removing channels changes the range that the next
    # DynamicQuantizeLinear quantizes on.
    path = dynamically_quantized(conv_chain(), tmp_path, per_channel)
    assert Counter(n.op_type for n in onnx.load(path).graph.node)["ConvInteger"] == 3
    written = read_model(str(path))
    assert written.written_as_qdq == ("ConvInteger",) * 3
    x = np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32)
    original = run(onnx.load(path), {"x": x})[0]
    assert relative_error(original, run(written.model, {"x": x})[0]) < 1e-2
    result = onnxprune.prune(str(path), ratio=0.5, round_to=1, compensate=False)
    assert sorted(g["kept"] for g in result.report["groups"] if g["pinned_reason"] is None) == [4, 4]
    assert result.pruned.macs == onnxprune.prune(conv_chain(), ratio=0.5, round_to=1, compensate=False).pruned.macs
    assert_matches_masked(written.model, result.model, result.report, tol=2e-2)
    assert any("dynamic quantization" in note for note in result.report["notes"])


def test_a_dynamically_quantized_classifier_is_compensated(tmp_path):
    # The Fashion-MNIST fixture through quantize_dynamic (ConvInteger, and MatMulInteger for its two
    # linear layers): half its MACs go, and compensation on calibration data keeps its predictions.
    data = np.load(MODELS / "fashion_mnist_test.npz")
    x = ((data["x"][:600].astype(np.float32) / 255 - 0.2860) / 0.3530)[:, None]
    path = dynamically_quantized(MODELS / "fashion_mnist.ts.onnx", tmp_path, per_channel=True)
    assert {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"} <= {n.op_type for n in onnx.load(path).graph.node}
    calib = [{"input": x, "labels": data["labels"][:600].astype(np.int64)}]
    agreement = {compensate: onnxprune.prune(str(path), target_macs=0.5, calib=calib, compensate=compensate)
                 .report["fidelity"]["top1_agreement"] for compensate in (True, False)}
    assert agreement[True] >= 0.9 > agreement[False]


def test_a_dynamically_quantized_transformer_keeps_its_fused_integer_matmuls(tmp_path):
    # The gpt fixture's MatMulIntegers, written as QDQ and pruned, are fused by ONNX Runtime into the same
    # integer MatMuls as before (MatMulIntegerToFloat, DynamicQuantizeMatMul).
    path = dynamically_quantized(MODELS / "gpt.ts.onnx", tmp_path, per_channel=False)
    result = onnxprune.prune(str(path), ratio=0.5, round_to=1, latency=False)
    assert result.pruned.macs == onnxprune.prune(MODELS / "gpt.ts.onnx", ratio=0.5, round_to=1, latency=False).pruned.macs
    before, after = fused_ops(onnx.load(path), tmp_path), fused_ops(result.model, tmp_path)
    for op in ("MatMulIntegerToFloat", "DynamicQuantizeMatMul"):
        assert after[op] == before[op] > 0


def test_a_relu_folded_into_unsigned_quantization_is_known_to_be_nonnegative(tmp_path):
    # ONNX Runtime's quantizer drops a Relu before a uint8 QuantizeLinear with zero point 0: the activation
    # criteria read such tensors as ReLU outputs (a mean |x| is the mean; apoz counts their zeros).
    x = np.random.default_rng(0).standard_normal((64, 3, 8, 8)).astype(np.float32)
    model = load_model(quantized(conv_chain(), x, tmp_path, per_channel=True))
    assert "Relu" not in {node.op_type for node in model.graph.node}
    analysis = CandidateBuilder(Loaded(model, "quantized", None, False), None).analysis()
    signs = {name: spec.nonnegative for name, spec in consumer_inputs(analysis).items()}
    assert signs == {"x_DequantizeLinear_Output": False, "ar_DequantizeLinear_Output": True,
                     "br_DequantizeLinear_Output": True}


def _float_model_with(middle: list[onnx.NodeProto], middle_inits: list, into: str) -> onnx.ModelProto:
    """x [N, 3, 8, 8] -> conv1 (8) -> 'a' -> [middle: a -> into, 8 channels] -> conv2 (4) -> y."""
    first, inits1 = conv("conv1", "x", "a", 3, 8, seed=1)
    last, inits2 = conv("conv2", into, "y", 8, 4, seed=2)
    return make_model([first, *middle, last], {"x": ["N", 3, 8, 8]}, ["y"], inits1 + middle_inits + inits2)


def _pruned_like_the_float_model(model: onnx.ModelProto, tmp_path: Path) -> onnxprune.PruneResult:
    """Prune ``model`` and its QDQ form at ratio 0.5: both meet the masking oracle and keep the same MACs."""
    x = np.random.default_rng(0).standard_normal((64, 3, 8, 8)).astype(np.float32)
    path = quantized(model, x, tmp_path, per_channel=True)
    expected = onnxprune.prune(model, ratio=0.5, round_to=1, compensate=False, latency=False)
    result = onnxprune.prune(str(path), ratio=0.5, round_to=1, compensate=False, latency=False)
    assert_matches_masked(onnx.load(path), result.model, result.report)
    assert result.report["pruned"]["macs"] == expected.report["pruned"]["macs"] < expected.report["original"]["macs"]
    return result


def test_a_constant_operand_quantized_at_run_time_is_a_constant_that_loses_the_channels(tmp_path):
    # A Constant node's output is an activation to ONNX Runtime's quantizer: it quantizes it with a
    # QuantizeLinear at run time (PointNet's identity matrix added to the predicted transform).
    offset = helper.make_node("Constant", [], ["offset"], name="offset_constant",
                              value=numpy_helper.from_array(np.linspace(-1, 1, 8, dtype=np.float32).reshape(1, 8, 1, 1)))
    middle = [offset, helper.make_node("Add", ["a", "offset"], ["m"], name="add"),
              helper.make_node("Relu", ["m"], ["r"], name="relu")]
    _pruned_like_the_float_model(_float_model_with(middle, [], "r"), tmp_path)
    quantizes = [n for n in onnx.load(tmp_path / "quantized_pc_QDQ.onnx").graph.node if n.op_type == "QuantizeLinear"]
    assert any(n.input[0] == "offset" for n in quantizes)


def test_quantized_parameters_shared_by_batchnorms_are_dequantized_for_each_reader(tmp_path):
    # PyTorch's exporters share equal parameters (a fresh BatchNorm's zero bias and mean), through an
    # Identity or not: quantized, the second BatchNorm's bias is an Identity of the first one's
    # DequantizeLinear, and both read one dequantized scale (a ConvTranspose's BatchNorm is not folded).
    ones = numpy_helper.from_array(np.ones(8, np.float32), "bn.scale")
    zeros = numpy_helper.from_array(np.zeros(8, np.float32), "bn.bias")
    var = numpy_helper.from_array(np.full(8, 1.5, np.float32), "bn.var")
    ct1, ct2 = (seeded_weight(f"ct{i}.w", (8, 8, 3, 3), 10 + i) for i in (1, 2))
    middle = [helper.make_node("ConvTranspose", ["a", "ct1.w"], ["t1"], name="ct1", pads=[1] * 4),
              helper.make_node("BatchNormalization", ["t1", "bn.scale", "bn.bias", "bn.bias", "bn.var"], ["n1"], name="bn1"),
              helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
              helper.make_node("Identity", ["bn.bias"], ["bn2.bias"], name="shared"),
              helper.make_node("ConvTranspose", ["r1", "ct2.w"], ["t2"], name="ct2", pads=[1] * 4),
              helper.make_node("BatchNormalization", ["t2", "bn.scale", "bn2.bias", "bn.bias", "bn.var"], ["n2"], name="bn2"),
              helper.make_node("Relu", ["n2"], ["r2"], name="relu2")]
    result = _pruned_like_the_float_model(_float_model_with(middle, [ones, zeros, var, ct1, ct2], "r2"), tmp_path)
    assert all(g["pinned_reason"] is None for g in result.report["groups"] if g["channels"] == 8)


def test_a_dense_output_reshaped_into_a_map_and_quantized_prunes_with_its_channels(tmp_path):
    # A decoder's dense layer reshaped into [N, 8, 2, 2] for a transposed conv: quantized, a QuantizeLinear
    # and a DequantizeLinear sit between the Reshape and the conv that reads its channels.
    dense = seeded_weight("dense.w", (8 * 8 * 8, 8 * 2 * 2), 5)
    middle = [helper.make_node("Flatten", ["a"], ["f"], name="flatten"),
              helper.make_node("MatMul", ["f", "dense.w"], ["d"], name="dense"),
              helper.make_node("Reshape", ["d", "map_shape"], ["m"], name="to_map"),
              helper.make_node("ConvTranspose", ["m", "up.w"], ["u"], name="up", strides=[4, 4], kernel_shape=[4, 4])]
    inits = [dense, numpy_helper.from_array(np.array([-1, 8, 2, 2], np.int64), "map_shape"),
             seeded_weight("up.w", (8, 8, 4, 4), 6)]
    model = _float_model_with(middle, inits, "u")
    result = _pruned_like_the_float_model(model, tmp_path)
    assert next(g for g in result.report["groups"] if g["members"][0]["tensor"] in ("d", "m"))["pinned_reason"] is None


def test_a_constant_expanded_and_quantized_at_run_time_loses_the_channels(tmp_path):
    # DETR's learned queries: a constant expanded to the batch, which a QDQ model quantizes per tensor
    # before the Add that reads it; the constant is sliced with the channels it is added to.
    queries = numpy_helper.from_array(np.random.default_rng(3).standard_normal((1, 8, 8, 8)).astype(np.float32), "queries")
    ones = numpy_helper.from_array(np.ones(4, np.int64), "ones")
    middle = [helper.make_node("Expand", ["queries", "ones"], ["q"], name="expand"),
              helper.make_node("Add", ["a", "q"], ["m"], name="add"),
              helper.make_node("Relu", ["m"], ["r"], name="relu")]
    _pruned_like_the_float_model(_float_model_with(middle, [queries, ones], "r"), tmp_path)
    quantized_model = onnx.load(tmp_path / "quantized_pc_QDQ.onnx")
    assert any(n.op_type == "QuantizeLinear" and n.input[0] == "q" for n in quantized_model.graph.node)


def test_a_quantized_weight_shared_by_two_convs_is_pruned_with_both_and_stored_once(tmp_path):
    # A detector's head shared by its pyramid levels reads one DequantizeLinear of its weight from each
    # level: each conv gets its own copy to slice, and copies still equal are stored once.
    shared = seeded_weight("head.w", (8, 8, 3, 3), 9)
    middle = [helper.make_node("Conv", ["a", "head.w"], ["h1"], name="head1", pads=[1] * 4),
              helper.make_node("Relu", ["a"], ["ar"], name="relu_a"),
              helper.make_node("Conv", ["ar", "head.w"], ["h2"], name="head2", pads=[1] * 4),
              helper.make_node("Add", ["h1", "h2"], ["s"], name="sum")]
    result = _pruned_like_the_float_model(_float_model_with(middle, [shared], "s"), tmp_path)
    assert {n["name"] for n in result.report["nodes"] if n["in_removed"]} >= {"head1", "head2"}
    unpruned = onnxprune.prune(str(tmp_path / "quantized_pc_QDQ.onnx"), ratio=0.0, compensate=False, latency=False)
    int8_heads = [i for i in unpruned.model.graph.initializer if i.data_type == onnx.TensorProto.INT8 and i.dims == [8, 8, 3, 3]]
    assert len(int8_heads) == 1
