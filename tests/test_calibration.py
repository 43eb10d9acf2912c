"""Activation statistics, activation criteria and compensation, on graphs where the right answer is known."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
import threadpoolctl
from helpers import conv, make_model, relative_error, run
from onnx import TensorProto, helper, numpy_helper

import onnxprune
from onnxprune import calibrate, candidates, importance
from onnxprune.calibrate import SUMS, ChannelStats, TensorSpec, Unfold, _gram_mode, _StatsGraph, collect_stats
from onnxprune.cli import main
from onnxprune.compensate import conv_pads
from onnxprune.config import Importance
from onnxprune.plan import make_plan

MODELS = Path(__file__).resolve().parent.parent / "models"
ACTIVATION_CRITERIA = ("activation", "apoz", "fluctuation", "wanda", "redundancy")


def _init(name: str, values: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.float32), name)


def two_convs(w1: np.ndarray, b1: np.ndarray, relu: bool = True, pads: int = 1, bias2: bool = True,
              c_out: int = 4, seed: int = 7) -> onnx.ModelProto:
    """x [N, 3, 8, 8] -> Conv(w1, b1) [-> Relu] -> Conv (3x3) -> y."""
    rng = np.random.default_rng(seed)
    c_mid = w1.shape[0]
    inits = [_init("w1", w1), _init("b1", b1), _init("w2", rng.normal(size=(c_out, c_mid, 3, 3)))]
    mid = "h" if relu else "a"
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="conv1", pads=[1] * 4)]
    if relu:
        nodes.append(helper.make_node("Relu", ["a"], ["h"], name="relu"))
    conv2_inputs = [mid, "w2"]
    if bias2:
        inits.append(_init("b2", rng.normal(size=c_out)))
        conv2_inputs.append("b2")
    nodes.append(helper.make_node("Conv", conv2_inputs, ["y"], name="conv2", pads=[pads] * 4))
    return make_model(nodes, {"x": ["N", 3, 8, 8]}, ["y"], inits)


def calibration(samples: int = 64, seed: int = 1) -> list[dict[str, np.ndarray]]:
    x = np.random.default_rng(seed).normal(size=(samples, 3, 8, 8)).astype(np.float32)
    return [{"x": x[i:i + 16]} for i in range(0, samples, 16)]


def removed_by(result, node: str = "conv2") -> list[int]:
    return next(n["in_removed"] for n in result.report["nodes"] if n["name"] == node)


def test_activation_criteria_remove_a_dead_channel_that_l1_keeps():
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(8, 3, 3, 3))
    b1 = rng.normal(size=8)
    w1[5] *= 10  # the largest weights: L1 ranks channel 5 first...
    b1[5] = -1e4  # ...but ReLU zeroes it on every input
    model = two_convs(w1, b1)
    options = {"ratio": 1 / 8, "round_to": 1, "compensate": False, "calib": calibration()}
    assert removed_by(onnxprune.prune(model, importance="l1", **options)) != [5]
    for criterion in ACTIVATION_CRITERIA:
        result = onnxprune.prune(model, importance=criterion, **options)
        assert removed_by(result) == [5], criterion
        # a dead channel carries nothing: removing it changes no output, even without compensation
        feeds = {"x": calibration(16, seed=9)[0]["x"]}
        assert relative_error(run(model, feeds)[0], run(result.model, feeds)[0]) < 1e-5


def test_redundancy_scores_follow_a_greedy_elimination_by_least_squares_refits():
    # The scores against a plain greedy elimination: at each step every channel still present is fitted
    # from the others and a constant (ridge regression, with the criterion's ridge of 1e-6 of the mean
    # energy, which the cost also carries); the one whose residual energy times its weights costs least
    # goes, and its score is the running maximum of the costs.
    rng = np.random.default_rng(15)
    base = rng.normal(size=(5, 400))
    x = np.vstack([base, rng.normal(size=(4, 5)) @ base + 0.3 * rng.normal(size=(4, 400))]) + 2.0
    x[7] = 0.5 * x[2] + 0.01 * rng.normal(size=400)  # a near twin
    x = x.astype(np.float32)
    column = rng.uniform(0.5, 2.0, size=9)
    stats = ChannelStats(9)
    stats.add_values(x.T, 1)
    samples = x.astype(np.float64)
    ridge = 1e-6 * np.mean(samples ** 2)
    alive, expected, running = list(range(9)), np.zeros(9), 0.0
    while alive:
        costs = []
        for c in alive:
            others = np.vstack([samples[[o for o in alive if o != c]], np.ones((1, 400))])
            shrink = np.diag(np.append(np.full(len(others) - 1, ridge), 0.0))
            fit = np.linalg.solve(others @ others.T / 400 + shrink, others @ samples[c] / 400)
            residual = np.mean((samples[c] - fit @ others) ** 2) + fit[:-1] @ shrink[:-1, :-1] @ fit[:-1] + ridge
            costs.append(residual * column[c])
        index = int(np.argmin(costs))
        running = max(running, costs[index])
        expected[alive.pop(index)] = running
    np.testing.assert_allclose(importance.redundancy_scores(stats, column), expected, rtol=1e-6)


def test_redundancy_removes_one_of_two_identical_channels_and_compensation_restores_the_output():
    rng = np.random.default_rng(1)
    w1, b1 = rng.normal(size=(8, 3, 3, 3)), rng.normal(size=8)
    w1[6], b1[6] = w1[2], b1[2]  # channels 2 and 6 are the same everywhere
    w1[[2, 6]] *= 3  # and the two largest: magnitude criteria keep both
    model = two_convs(w1, b1)
    feeds = {"x": calibration(16, seed=9)[0]["x"]}
    expected = run(model, feeds)[0]
    for compensate in (True, False):
        result = onnxprune.prune(model, ratio=1 / 8, round_to=1, importance="redundancy", calib=calibration(),
                                 compensate=compensate)
        removed = removed_by(result)
        assert len(removed) == 1 and removed[0] in (2, 6)
        error = relative_error(expected, run(result.model, feeds)[0])
        if compensate:  # the twin's consumer weights absorb the removed channel's: nothing is lost
            assert error < 1e-4
            assert {r["method"] for r in result.report["compensation"]} & {"merge", "ls", "refit"}
        else:
            assert error > 1e-2


@pytest.mark.parametrize("bias2", [True, False])
def test_compensation_recovers_a_channel_that_is_linear_in_the_others(bias2):
    rng = np.random.default_rng(2)
    w1, b1 = rng.normal(size=(8, 3, 3, 3)), rng.normal(size=8)
    w1[7] = 0.5 * w1[0] - 2.0 * w1[3]
    b1[7] = 0.5 * b1[0] - 2.0 * b1[3] + 0.25  # channel 7 = 0.5 ch0 - 2 ch3 + 0.25, position by position
    # No ReLU between the convs, and no padding in the consumer (a padded border would see 0, not 0.25).
    model = two_convs(w1, b1, relu=False, pads=0, bias2=bias2)
    feeds = {"x": calibration(16, seed=9)[0]["x"]}
    expected = run(model, feeds)[0]
    result = onnxprune.prune(model, ratio=1 / 8, round_to=1, importance="redundancy", calib=calibration())
    removed = removed_by(result)
    assert len(removed) == 1 and removed[0] in (0, 3, 7)  # any one of the three is the others' combination
    assert relative_error(expected, run(result.model, feeds)[0]) < 1e-4
    conv2 = next(n for n in result.model.graph.node if n.name == "conv2")
    assert len(conv2.input) == 3  # the constant term needs a bias: one was created where there was none
    plain = onnxprune.prune(model, ratio=1 / 8, round_to=1, importance="redundancy", calib=calibration(),
                            compensate=False)
    assert relative_error(expected, run(plain.model, feeds)[0]) > 1e-2


def _linear_channel_model() -> onnx.ModelProto:
    """Two convs; channel 7 of the first is 0.5 ch0 - 2 ch3 + 0.0025, and channels 0, 3, 7 are the weakest."""
    rng = np.random.default_rng(2)
    w1, b1 = rng.normal(size=(8, 3, 3, 3)), rng.normal(size=8)
    w1[[0, 3]] *= 0.01
    b1[[0, 3]] = 0.0
    w1[7], b1[7] = 0.5 * w1[0] - 2.0 * w1[3], 0.0025
    return two_convs(w1, b1, relu=False, pads=0)


@pytest.mark.parametrize("importance, options, gram, sums", [
    ("l1", {}, False, ("total",)),  # compensation's first pass reads the Gram matrices of its refit's recording
    ("l1", {"scans": True}, True, ("total",)),  # a sensitivity scan builds candidates without refit
    ("l1", {"refit_passes": 0}, True, ("total",)),
    ("activation", {}, False, ("total", "total_abs")),
    ("apoz", {}, False, ("total", "zeros")),
    ("wanda", {}, False, ("total", "total_sq")),
    ("redundancy", {"compensate": False}, True, ("total", "total_sq"))])
def test_the_statistics_record_what_the_criterion_and_compensation_read(importance, options, gram, sums):
    activations = candidates.Activations([], Importance(importance), **{"compensate": True, **options})
    assert (activations.gram, activations.sums) == (gram, sums)


def test_a_build_without_refit_records_the_gram_matrices_its_first_pass_needs():
    # The ranking's recording holds means only (l1 with a refit to come); a candidate built without a
    # refit then records Gram matrices for its first pass, which recovers channel 7 exactly.
    model = _linear_channel_model()
    activations = candidates.Activations(calibration(), Importance.L1, compensate=True)
    builder = candidates.CandidateBuilder(candidates.Loaded(model, None, None, False), None, activations=activations)
    analysis = builder.analysis()
    assert not any(s.has_gram for s in builder.activation_stats(analysis).values())
    scores = np.ones(analysis.unit_count)
    scores[analysis.unit_of_slot[analysis.context.channels["a"].slots[7]]] = 0.0
    candidate = builder.build(make_plan(analysis, scores, 1 / 8, 1), analysis, refit=False)
    conv2 = next(r for r in candidate.compensation if r.node == "conv2")
    assert conv2.method == "ls" and all(s.has_gram for s in builder.activation_stats(None).values())
    feeds = {"x": calibration(16, seed=9)[0]["x"]}
    assert relative_error(run(model, feeds)[0], run(candidate.model, feeds)[0]) < 1e-4


def test_without_a_refit_the_first_pass_records_gram_matrices_of_its_own():
    # With a refit, the first pass reads the Gram matrices of the refit's recording and the statistics
    # pass records none for l1; without one, the statistics pass records them.
    model = _linear_channel_model()
    feeds = {"x": calibration(16, seed=9)[0]["x"]}
    result = onnxprune.prune(model, ratio=1 / 8, round_to=1, calib=calibration(), importance="activation",
                             refit_passes=0)
    conv2 = next(r for r in result.report["compensation"] if r["node"] == "conv2")
    assert removed_by(result)[0] in (0, 3, 7) and conv2["method"] == "ls"
    assert relative_error(run(model, feeds)[0], run(result.model, feeds)[0]) < 1e-4


@pytest.mark.parametrize("size, padding", [
    (10, "pads"),
    (36, "pads"),  # 36: every 2nd output position is sampled, on both sides alike
    (10, "SAME_UPPER"),  # tf2onnx's "same" padding
])
def test_kernel_refit_recovers_a_channel_that_is_a_shifted_copy_of_another(size, padding):
    # Channel 3 is channel 0 moved one pixel sideways: no mix of channels at the same position gives it,
    # but the consumer can read channel 0 one tap further left, which only a refit of its whole kernel finds.
    rng = np.random.default_rng(4)
    w1 = rng.normal(size=(4, 3, 3, 3))
    w1[0, :, :, 0] = 0.0
    w1[3] = 0.0
    w1[3, :, :, :2] = w1[0, :, :, 1:]  # channel 3 at (i, j) = channel 0 at (i, j - 1)
    w2 = rng.normal(size=(4, 4, 3, 3))
    w2[:, 3] = 0.0
    w2[:, 3, 1, 1] = rng.normal(size=4)  # the consumer reads channel 3 at its centre tap only (smallest L1)
    pads = {"pads": [1] * 4} if padding == "pads" else {"auto_pad": padding, "kernel_shape": [3, 3]}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1", **pads),
             helper.make_node("Conv", ["a", "w2"], ["y"], name="conv2", **pads)]
    model = make_model(nodes, {"x": ["N", 3, size, size]}, ["y"], [_init("w1", w1), _init("w2", w2)])

    def framed(samples: int, seed: int) -> np.ndarray:  # a zero frame: the shift holds at the border too
        x = np.zeros((samples, 3, size, size), dtype=np.float32)
        x[:, :, 2:-2, 2:-2] = np.random.default_rng(seed).normal(size=(samples, 3, size - 4, size - 4))
        return x

    calib = [{"x": framed(64, 1)}]
    feeds = {"x": framed(8, 9)}
    expected = run(model, feeds)[0]
    result = onnxprune.prune(model, ratio=0.25, round_to=1, importance="l1", calib=calib)
    assert removed_by(result) == [3]
    assert next(r for r in result.report["compensation"] if r["node"] == "conv2")["method"] == "refit"
    assert relative_error(expected, run(result.model, feeds)[0]) < 1e-4
    plain = onnxprune.prune(model, ratio=0.25, round_to=1, importance="l1", calib=calib, compensate=False)
    assert relative_error(expected, run(plain.model, feeds)[0]) > 1e-1


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("size, kernel, stride", [(10, 3, 2), (9, 4, 1), (11, 3, 3), (7, 1, 2)])
def test_same_padding_is_made_explicit_as_onnx_runtime_pads(mode, size, kernel, stride):
    w = _init("w", np.random.default_rng(2).normal(size=(2, 3, kernel, kernel)))
    attrs = {"strides": [stride] * 2, "kernel_shape": [kernel] * 2}
    same = make_model([helper.make_node("Conv", ["x", "w"], ["y"], auto_pad=mode, **attrs)], {"x": [1, 3, size, size]}, ["y"], [w])
    pads = conv_pads(next(n for n in gs.import_onnx(onnx.shape_inference.infer_shapes(same)).nodes))
    explicit = make_model([helper.make_node("Conv", ["x", "w"], ["y"], pads=pads, **attrs)], {"x": [1, 3, size, size]}, ["y"], [w])
    x = {"x": np.random.default_rng(3).normal(size=(1, 3, size, size)).astype(np.float32)}
    np.testing.assert_allclose(run(same, x)[0], run(explicit, x)[0], rtol=1e-5, atol=1e-5)
    if (size, kernel, stride) == (10, 3, 2):  # one row of padding in all: at the end (UPPER) or the start
        assert pads == ([0, 0, 1, 1] if mode == "SAME_UPPER" else [1, 1, 0, 0])


def test_recorded_patches_are_the_conv_input_windows_with_strides_dilations_padding_and_sampling():
    unfold = Unfold(kernel=(3, 2), strides=(2, 1), pads=(1, 0, 2, 1), dilations=(2, 1), step=2)
    builder = _StatsGraph(13)
    builder.outputs = [builder.patches("x", TensorSpec(1, 3, (2, 3, 9, 10)), unfold, "p")]
    model = make_model([], {"x": [2, 3, 9, 10]}, [], [])
    x = np.random.default_rng(8).normal(size=(2, 3, 9, 10)).astype(np.float32)
    rows = builder.session(model).run(builder.outputs, {"x": x})[0]
    padded = np.pad(x, ((0, 0), (0, 0), (1, 2), (0, 1)))  # top/left pads first, then bottom/right
    heights = (9 + 1 + 2 - 2 * 2 - 1) // 2 + 1  # the Conv's output size, before sampling every 2nd
    widths = (10 + 0 + 1 - 1 * 1 - 1) // 1 + 1
    expected = [[padded[n, c, i * 2 + u * 2, j + v] for n in range(2) for i in range(0, heights, 2)
                 for j in range(0, widths, 2)] for c in range(3) for u in range(3) for v in range(2)]
    np.testing.assert_array_equal(rows, np.array(expected, dtype=np.float32))


def test_a_residual_branch_is_refitted_to_correct_the_skip_branch_too(monkeypatch):
    # y = conv3(q) + conv_s(conv1(x)), q an invertible 1x1 mix of x. Pruning half of conv1's channels
    # loses what the 1x1 skip conv cannot rebuild from the rest; but that loss is a 3x3 conv of x, hence
    # of q, so conv3, refitted to y minus the pruned skip branch, takes it over exactly.
    rng = np.random.default_rng(5)
    inits = [_init("wp", rng.normal(size=(3, 3, 1, 1))), _init("wq", rng.normal(size=(3, 3, 1, 1))),
             _init("w1", rng.normal(size=(8, 3, 3, 3))), _init("ws", rng.normal(size=(4, 8, 1, 1))),
             _init("w3", rng.normal(size=(4, 3, 3, 3)))]
    nodes = [helper.make_node("Conv", ["x", "wp"], ["p"], name="conv_p"),
             helper.make_node("Conv", ["p", "wq"], ["q"], name="conv_q"),
             helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1", pads=[1] * 4),
             helper.make_node("Conv", ["a", "ws"], ["c"], name="conv_s"),
             helper.make_node("Conv", ["q", "w3"], ["b"], name="conv3", pads=[1] * 4),
             helper.make_node("Add", ["b", "c"], ["y"], name="add")]
    model = make_model(nodes, {"x": ["N", 3, 8, 8]}, ["y"], inits)
    feeds = {"x": calibration(16, seed=9)[0]["x"]}
    expected = run(model, feeds)[0]
    options = {"ratio": 0.5, "round_to": 1, "importance": "l1", "calib": calibration(), "exclude": ("conv_p", "conv_q")}
    result = onnxprune.prune(model, **options)
    assert len(removed_by(result, "conv_s")) == 4
    assert relative_error(expected, run(result.model, feeds)[0]) < 1e-4
    monkeypatch.setattr(candidates, "residual_sum", lambda *args: None)  # each branch fitted to its own output
    separate = onnxprune.prune(model, **options)
    assert relative_error(expected, run(separate.model, feeds)[0]) > 1e-2


def test_a_refit_needs_several_samples_per_fitted_input_in_each_fold():
    rng = np.random.default_rng(6)
    model = two_convs(rng.normal(size=(8, 3, 3, 3)), rng.normal(size=8))
    options = {"ratio": 1 / 8, "round_to": 1, "importance": "l1"}

    def conv2_method(**calib) -> str:
        result = onnxprune.prune(model, **options, **calib)
        return next(r for r in result.report["compensation"] if r["node"] == "conv2")["method"]

    # conv2's kernel refit fits 7 channels x 9 taps + 1 inputs, so each fold needs 256 positions. Eight
    # samples make one batch, hence one fold, on which a refit would be checked on the data it was fitted
    # to (and always win): only the first pass is allowed.
    assert conv2_method(calib=calibration(8)) in ("bias", "merge", "ls")
    assert conv2_method(calib=calibration(64)) == "refit"


def test_compensation_creates_a_gemm_bias_and_recovers_a_linear_feature():
    rng = np.random.default_rng(3)
    w1, b1 = rng.normal(size=(6, 5)), rng.normal(size=5)
    w1[:, 4] = 2.0 * w1[:, 1] - w1[:, 2]
    b1[4] = 2.0 * b1[1] - b1[2] + 1.0  # feature 4 = 2 f1 - f2 + 1
    w2 = rng.normal(size=(5, 3))
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"),
             helper.make_node("Gemm", ["h", "w2"], ["y"], name="fc2", alpha=0.5)]
    model = make_model(nodes, {"x": ["N", 6]}, ["y"], [_init("w1", w1), _init("b1", b1), _init("w2", w2)])
    x = rng.normal(size=(64, 6)).astype(np.float32)
    result = onnxprune.prune(model, ratio=0.2, round_to=1, importance="redundancy", calib=[{"x": x}])
    assert len(removed_by(result, "fc2")) == 1
    feeds = {"x": rng.normal(size=(8, 6)).astype(np.float32)}
    assert relative_error(run(model, feeds)[0], run(result.model, feeds)[0]) < 1e-4
    assert len(next(n for n in result.model.graph.node if n.name == "fc2").input) == 3


@pytest.mark.parametrize("op, gates, bias", [("LSTM", 4, False), ("GRU", 3, True), ("RNN", 1, True)])
def test_compensation_folds_a_linear_feature_into_a_recurrent_nodes_input_bias(op, gates, bias):
    rng = np.random.default_rng(4)
    w1, b1 = rng.normal(size=(6, 5)), rng.normal(size=5)
    w1[:, 4] = 2.0 * w1[:, 1] - w1[:, 2]
    b1[4] = 2.0 * b1[1] - b1[2] + 1.0  # feature 4 = 2 f1 - f2 + 1, at every step
    inits = [_init("w1", w1), _init("b1", b1), _init("w", rng.normal(size=(2, gates * 3, 5))),
             _init("r", rng.normal(size=(2, gates * 3, 3)) * 0.5)]
    if bias:
        inits.append(_init("b", rng.normal(size=(2, 2 * gates * 3))))
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node("Transpose", ["hb"], ["seq"], perm=[1, 0, 2]),  # batch first, as exporters feed it
             helper.make_node(op, ["seq", "w", "r"] + ["b"] * bias, ["y"], name="rnn", hidden_size=3,
                              direction="bidirectional", **({"linear_before_reset": 1} if op == "GRU" else {}))]
    model = make_model(nodes, {"x": ["N", 7, 6]}, ["y"], inits)
    x = rng.normal(size=(64, 7, 6)).astype(np.float32)
    batches = [{"x": x[i:i + 16]} for i in range(0, 64, 16)]
    result = onnxprune.prune(model, ratio=0.2, round_to=1, importance="redundancy", calib=batches)
    assert len(removed_by(result, "rnn")) == 1
    feeds = {"x": rng.normal(size=(8, 7, 6)).astype(np.float32)}
    assert relative_error(run(model, feeds)[0], run(result.model, feeds)[0]) < 1e-4
    rnn = next(n for n in result.model.graph.node if n.name == "rnn")
    # The constant term went into W's half of B (as PyTorch exports a GRU, R's half of it is gated), created
    # where there was none.
    assert len(rnn.input) == 4
    plain = onnxprune.prune(model, ratio=0.2, round_to=1, importance="redundancy", calib=batches, compensate=False)
    assert relative_error(run(model, feeds)[0], run(plain.model, feeds)[0]) > 1e-2


def test_compensation_of_a_recurrent_node_that_loses_hidden_units_too():
    # Features in, hidden units out: the bias compensation creates (without B) loses the same hidden units.
    rng = np.random.default_rng(5)
    inits = [_init("w1", rng.normal(size=(6, 8))), _init("w", rng.normal(size=(2, 16, 8)) * 0.5),
             _init("r", rng.normal(size=(2, 16, 4)) * 0.5), _init("fc", rng.normal(size=(8, 3))),
             numpy_helper.from_array(np.array([0, 0, -1], np.int64), "merged")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Transpose", ["h"], ["seq"], perm=[1, 0, 2]),
             helper.make_node("LSTM", ["seq", "w", "r"], ["hs"], name="rnn", hidden_size=4, direction="bidirectional"),
             helper.make_node("Transpose", ["hs"], ["hs_t"], perm=[0, 2, 1, 3]),
             helper.make_node("Reshape", ["hs_t", "merged"], ["features"]),
             helper.make_node("MatMul", ["features", "fc"], ["y"], name="fc")]
    model = make_model(nodes, {"x": ["N", 7, 6]}, ["y"], inits)
    x = (rng.normal(size=(128, 7, 6)) + 1.0).astype(np.float32)  # a mean to fold into the bias
    batches = [{"x": x[i:i + 16]} for i in range(0, 128, 16)]
    feeds = {"x": (rng.normal(size=(32, 7, 6)) + 1.0).astype(np.float32)}
    errors = []
    for compensate in (True, False):
        result = onnxprune.prune(model, ratio=0.5, round_to=1, calib=batches, compensate=compensate)
        rnn = next(n for n in result.model.graph.node if n.name == "rnn")
        assert helper.get_attribute_value(next(a for a in rnn.attribute if a.name == "hidden_size")) == 2
        assert (len(rnn.input) > 3) == compensate  # a bias of [2 directions, 2 x 4 gates x 2 hidden units]
        errors.append(relative_error(run(model, feeds)[0], run(result.model, feeds)[0]))
    assert errors[0] < errors[1]


def test_bn_criterion_ranks_by_batchnorm_scale_without_calibration_data():
    rng = np.random.default_rng(4)
    gamma = rng.uniform(0.5, 1.5, size=8)
    gamma[3] = 1e-3
    inits = [_init("w1", rng.normal(size=(8, 3, 3, 3))), _init("w2", rng.normal(size=(4, 8, 3, 3))),
             _init("g", gamma), _init("beta", np.zeros(8)), _init("mu", np.zeros(8)), _init("var", np.ones(8))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1", pads=[1] * 4),
             helper.make_node("BatchNormalization", ["a", "g", "beta", "mu", "var"], ["b"], name="bn"),
             helper.make_node("Relu", ["b"], ["h"], name="relu"),
             helper.make_node("Conv", ["h", "w2"], ["y"], name="conv2", pads=[1] * 4)]
    model = make_model(nodes, {"x": ["N", 3, 8, 8]}, ["y"], inits)
    result = onnxprune.prune(model, ratio=1 / 8, round_to=1, importance="bn")
    assert removed_by(result) == [3]
    assert not any(note.startswith("warning") for note in result.notes)


@pytest.mark.parametrize("gram", [True, False])  # with a Gram matrix, the sums of squares are its diagonal
def test_statistics_recorded_in_onnx_runtime_match_numpy(gram):
    model = two_convs(np.random.default_rng(5).normal(size=(8, 3, 3, 3)), np.zeros(8))
    batches = calibration(48)
    x = np.concatenate([b["x"] for b in batches])
    x[:, 1, :2] = 0.0  # some exact zeros
    batches = [{"x": x[i:i + 16]} for i in range(0, 48, 16)]
    stats = collect_stats(model, {"x": TensorSpec(1, 3, ("N", 3, 8, 8))}, batches, gram=gram, sums=SUMS)["x"]
    reference = ChannelStats(3)
    for index, batch in enumerate(batches):
        reference.add_values(batch["x"], 1, fold=index % 2)
    assert stats.count == reference.count == 48 * 64
    # "zeros" counts x <= 0 (where a ReLU of x is 0): a quarter of channel 1 is 0, half the rest negative.
    np.testing.assert_allclose(stats.zero_fraction, (x <= 0).mean(axis=(0, 2, 3)), rtol=1e-6)
    assert 0.55 < stats.zero_fraction[1] < 0.7 and np.delete(stats.zero_fraction, 1).max() < 0.55
    for name in ("mean", "mean_sq", "mean_abs", "variance", "zero_fraction"):
        np.testing.assert_allclose(getattr(stats, name), getattr(reference, name), rtol=1e-5, atol=1e-6)
    assert stats.has_gram == gram
    for fold in (0, 1, None) if gram else ():
        np.testing.assert_allclose(stats.second_moment(fold), reference.second_moment(fold), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("shape, axis, dtype", [
    (("N", 3, 8, 8), 1, np.float32),  # many positions per channel: a Gram matrix per sample, summed
    (("N", 16, 2, 2), 1, np.float32),  # few: the channels are moved first
    (("N", 5, 5, 3), 3, np.float32), (("N", 7, 6), 2, np.float32),  # channels last: no move at all
    (("N", 4, 6), 1, np.float32), (("N", 3, 8, 8), 1, np.float16), (("N", 7, 6), 2, np.float16),
    (("N", 5), 1, np.float32), (("N", 5), 1, np.float16)])  # flat: the tensor is the transposed view
def test_gram_matrices_of_every_layout_match_numpy(shape, axis, dtype):
    rng = np.random.default_rng(21)
    model = make_model([helper.make_node("Identity", ["x"], ["y"], name="id")], {"x": list(shape)}, ["y"], [])
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.elem_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    batches = [{"x": (rng.normal(size=(n, *shape[1:])) + np.arange(shape[axis]).reshape(
        [-1 if i == axis else 1 for i in range(1, len(shape))])).astype(dtype)} for n in (4, 6, 5)]
    spec = TensorSpec(axis, shape[axis], shape, float32=dtype == np.float32)
    stats = collect_stats(model, {"y": spec}, batches, gram=True, sums=SUMS)["y"]
    reference = ChannelStats(shape[axis])
    for index, batch in enumerate(batches):
        reference.add_values(batch["x"].astype(np.float32), axis, fold=index % 2)
    np.testing.assert_array_equal(stats.counts, reference.counts)
    assert stats.has_gram
    for fold in (0, 1):
        np.testing.assert_allclose(stats.second_moment(fold), reference.second_moment(fold), rtol=1e-4, atol=1e-5)
    for name in ("mean", "mean_sq", "mean_abs", "zero_fraction"):
        np.testing.assert_allclose(getattr(stats, name), getattr(reference, name), rtol=1e-5, atol=1e-6)


def test_gram_runs_are_pairs_spread_over_the_data():
    # Pairs of runs, one per fold, evenly spread: a quarter of them, or enough for 64 samples a fold.
    taken = calibrate.gram_runs(100, 16)
    assert sum(taken[0::2]) == sum(taken[1::2]) == 13
    assert all(taken[i] == taken[i + 1] for i in range(0, 100, 2))
    first = [i for i in range(0, 100, 2) if taken[i]]
    assert first[0] == 0 and max(np.diff(first)) <= 8 and first[-1] >= 90
    assert calibrate.gram_runs(11, 48) == [True, True, False, False, False, False, True, True, False, False, False]
    assert calibrate.gram_runs(8, 64) == [True, True] + [False] * 6
    assert all(calibrate.gram_runs(20, 4)) and calibrate.gram_runs(3, 1000) == [True, True, False]


@pytest.mark.parametrize("shape, axis, skipped", [
    (("N", 3, 8, 8), 1, True),  # sums beside the Gram matrix: per-sample means, packed with the others
    (("N", 7, 6), 2, True),  # sums reduced beside it
    # 8 samples a fold on the runs that take them would give these fewer positions than 4 x their channels:
    # they take them on every run.
    (("N", 16, 2, 2), 1, False), (("N", 5), 1, False)])
def test_gram_matrices_of_a_share_of_the_runs_match_numpy(monkeypatch, shape, axis, skipped):
    # Of 16 runs of 4 samples, the Gram matrices come from runs 0, 1, 8 and 9 (their nodes sit in an If that
    # the other runs skip); the sums and means from all of them. (Skipping so little work is not worth the
    # If's cost: only with GRAM_BRANCH_MIN_MACS lowered.)
    monkeypatch.setattr(calibrate, "GRAM_MIN_SAMPLES", 1)
    monkeypatch.setattr(calibrate, "GRAM_BRANCH_MIN_MACS", 0)
    rng = np.random.default_rng(3)
    model = make_model([helper.make_node("Identity", ["x"], ["y"], name="id")], {"x": [4, *shape[1:]]}, ["y"], [])
    batches = [{"x": (rng.normal(size=(4, *shape[1:])) * (1 + i % 3) + i).astype(np.float32)} for i in range(16)]
    spec = TensorSpec(axis, shape[axis], shape)
    sizes, add_reduced = [], calibrate._add_reduced  # the size of each run's Gram output: 0 where skipped

    def spy(stats, names, mode, values, fold, with_gram=True):
        sizes.append(values[names[-1]].size)
        add_reduced(stats, names, mode, values, fold, with_gram)
    monkeypatch.setattr(calibrate, "_add_reduced", spy)
    stats = collect_stats(model, {"y": spec}, batches, gram=True, sums=("total", "total_sq"))["y"]
    taken = [i in (0, 1, 8, 9) or not skipped for i in range(16)]
    assert [size > 0 for size in sizes] == taken
    everything, grams = ChannelStats(shape[axis]), ChannelStats(shape[axis])
    for index, batch in enumerate(batches):
        everything.add_values(batch["x"], axis, fold=index % 2)
        if taken[index]:
            grams.add_values(batch["x"], axis, fold=index % 2)
    np.testing.assert_array_equal(stats.counts, everything.counts)
    np.testing.assert_array_equal(stats.gram_counts, grams.counts)
    np.testing.assert_allclose(stats.mean, everything.mean, rtol=1e-5, atol=1e-6)
    for fold in (0, 1, None):
        np.testing.assert_allclose(stats.second_moment(fold), grams.second_moment(fold), rtol=1e-4, atol=1e-5)
    # The sums of squares come from the Gram matrices' diagonals, fold by fold, scaled to every position.
    squares = np.diagonal(grams.grams, axis1=1, axis2=2) / grams.counts[:, None]
    np.testing.assert_allclose(stats.mean_sq, (squares * everything.counts[:, None]).sum(0) / everything.count, rtol=1e-4)
    # (the runs differ in scale and mean: the skipped ones would change the sums of squares)
    assert np.allclose(stats.mean_sq, everything.mean_sq, rtol=1e-4) != skipped


def test_only_the_well_covered_gram_matrices_skip_runs(monkeypatch):
    # A map (64 positions a sample) skips three runs in four; in the same recording, its pooled vector (one
    # position) takes its Gram matrix on every run. At the default GRAM_BRANCH_MIN_MACS, the map's products
    # are too small to skip: every run takes them.
    monkeypatch.setattr(calibrate, "GRAM_MIN_SAMPLES", 1)
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu"), helper.make_node("GlobalAveragePool", ["y"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"], axis=1)]
    model = make_model(nodes, {"x": [4, 3, 8, 8]}, ["f"], [])
    batches = [{"x": rng.normal(size=(4, 3, 8, 8)).astype(np.float32)} for _ in range(16)]
    specs = {"y": TensorSpec(1, 3, (4, 3, 8, 8)), "f": TensorSpec(1, 3, (4, 3))}
    stats = collect_stats(model, specs, batches, gram=True, sums=("total", "total_sq"))
    assert list(stats["y"].gram_counts) == list(stats["y"].counts)
    monkeypatch.setattr(calibrate, "GRAM_BRANCH_MIN_MACS", 0)
    stats = collect_stats(model, specs, batches, gram=True, sums=("total", "total_sq"))
    assert list(stats["y"].gram_counts) == [2 * 4 * 64] * 2 and list(stats["y"].counts) == [8 * 4 * 64] * 2
    assert list(stats["f"].gram_counts) == list(stats["f"].counts) == [8 * 4] * 2
    pooled = np.concatenate([np.maximum(b["x"], 0).mean(axis=(2, 3)) for b in batches])
    np.testing.assert_allclose(stats["f"].second_moment()[:3, :3], pooled.T @ pooled / len(pooled), rtol=1e-4)


@pytest.mark.parametrize("shape, axis, opset", [
    (("N", 4, 6, 6), 1, 17), (("N", 6, 6, 4), 3, 17), (("N", 5, 4), 2, 18), (("N", 4), 1, 13), (("N", 4, 10), 1, 18),
    (("N", 4, 12, 12), 1, 13), (("N", 4, "H", "W"), 1, 13), (("N", 4, 1, 1), 1, 13)])
def test_per_sample_means_give_the_statistics_of_every_layout(shape, axis, opset):
    # Without Gram matrices the statistics are per-sample means (GlobalAveragePool for channels second)
    # and, where the positions per sample are known, sums (ReduceL1, ReduceSumSquare). A 12x12 map is
    # sampled at every 3rd row and column; symbolic spatial dims take means only.
    rng = np.random.default_rng(11)
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], {"x": list(shape)}, ["y"], [], opset=opset)
    static = [d if isinstance(d, int) else 6 for d in shape[1:]]
    batches = [{"x": rng.normal(size=(n, *static)).astype(np.float32)} for n in (3, 5, 4)]
    spec = TensorSpec(axis, shape[axis], shape, sample_fraction=1 / 9 if 12 in shape else 1.0)
    stats = collect_stats(model, {"y": spec}, batches, sums=SUMS)["y"]
    reference = ChannelStats(shape[axis])
    for index, batch in enumerate(batches):
        sample = batch["x"][:, :, ::3, ::3] if 12 in shape else batch["x"]
        reference.add_values(np.maximum(sample, 0), axis, fold=index % 2)
    # Symbolic spatial dims: each sample's means count once.
    np.testing.assert_array_equal(stats.counts, reference.counts if "H" not in shape else [7, 5])
    for name in ("mean", "mean_sq", "mean_abs", "variance", "zero_fraction"):
        np.testing.assert_allclose(getattr(stats, name), getattr(reference, name), rtol=1e-5, atol=1e-6)
    assert 0.3 < stats.zero_fraction.mean() < 0.7


def test_channel_runs_of_a_wider_recorded_tensor_are_sliced_from_its_statistics():
    # a = Conv(x), 8 channels; Split(a) -> a0 (3), a1 (5); s = a[:, 2:6]; cat = Concat(a1, x);
    # wide = Concat(x, a0, a1): x, a (through its Split), a1 and s are runs of wide's channels.
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="conv", pads=[1] * 4),
             helper.make_node("Split", ["a", "sizes"], ["a0", "a1"], name="split", axis=1),
             helper.make_node("Slice", ["a", "starts", "ends", "axes"], ["s"], name="slice"),
             helper.make_node("Concat", ["a1", "x"], ["cat"], name="cat", axis=1),
             helper.make_node("Concat", ["x", "a0", "a1"], ["wide"], name="wide", axis=1)]
    inits = [_init("w", rng.normal(size=(8, 3, 3, 3))), numpy_helper.from_array(np.array([3, 5]), "sizes"),
             numpy_helper.from_array(np.array([2]), "starts"), numpy_helper.from_array(np.array([6]), "ends"),
             numpy_helper.from_array(np.array([1]), "axes")]
    model = make_model(nodes, {"x": ["N", 3, 8, 8]}, ["s", "cat", "wide"], inits)
    specs = {name: TensorSpec(1, size, ("N", size, 8, 8)) for name, size in
             (("x", 3), ("a", 8), ("a1", 5), ("s", 4), ("cat", 8), ("wide", 11))}
    views = calibrate.channel_views(gs.import_onnx(model), specs)
    assert views == {"x": ("wide", 0), "a": ("wide", 3), "a1": ("wide", 6), "s": ("wide", 5)}
    batches = calibration(48)
    for gram in (False, True):
        alone = collect_stats(model, specs, batches, gram=gram, sums=SUMS)
        sliced = collect_stats(model, specs, batches, gram=gram, sums=SUMS, views=views)
        assert set(sliced) == set(specs)
        for name in specs:
            np.testing.assert_array_equal(sliced[name].counts, alone[name].counts)
            for stat in ("mean", "mean_sq", "mean_abs", "zero_fraction"):
                np.testing.assert_allclose(getattr(sliced[name], stat), getattr(alone[name], stat), rtol=1e-5, atol=1e-6)
            assert sliced[name].has_gram == gram
            if gram:
                np.testing.assert_allclose(sliced[name].grams, alone[name].grams, rtol=1e-5, atol=1e-4)
    # the recorded tensor takes the denser of the samples: a's 1 in 9 positions is sliced from wide's all
    sparse = {**specs, "a": replace(specs["a"], sample_fraction=1 / 9)}
    assert collect_stats(model, sparse, batches, views=views)["a"].count == 48 * 64
    # but with Gram matrices a view's share counts at the wider tensor's cost: x's every position, (3 / 11)^2
    # of wide's, with the others' 1 in 9 and wide's own, comes to 0.28 of wide's positions (every third row
    # and column)
    narrow = {name: replace(spec, sample_fraction=1.0 if name == "x" else 1 / 9) for name, spec in specs.items()}
    assert collect_stats(model, narrow, batches, views=views)["x"].count == 48 * 64
    assert collect_stats(model, narrow, batches, gram=True, views=views)["x"].count == 48 * 9


def test_small_batches_are_joined_for_the_recording_and_give_the_same_statistics():
    # 32 batches of 2 samples run as 8 of 8 (at least 8 runs are left, so both folds keep several).
    model = two_convs(np.random.default_rng(5).normal(size=(8, 3, 3, 3)), np.zeros(8))
    x = np.random.default_rng(3).normal(size=(64, 3, 8, 8)).astype(np.float32)
    batches = [{"x": x[i:i + 2]} for i in range(0, 64, 2)]
    spec = TensorSpec(1, 3, ("N", 3, 8, 8))
    joined = calibrate.recording_batches(model, batches, [spec])
    assert [len(b["x"]) for b in joined] == [8] * 8
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in joined]), x)
    assert all(np.shares_memory(b["x"], x) for b in joined)  # slices back to back: joined without a copy
    copies = calibrate.recording_batches(model, [{"x": b["x"].copy()} for b in batches], [spec])
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in copies]), x)
    reversed_order = calibrate.recording_batches(model, batches[::-1], [spec])  # not back to back in memory
    np.testing.assert_array_equal(reversed_order[0]["x"], np.concatenate([b["x"] for b in batches[:-5:-1]]))
    stats = collect_stats(model, {"x": spec}, batches, gram=True, sums=SUMS)["x"]
    reference = ChannelStats(3)
    for index, batch in enumerate(joined):
        reference.add_values(batch["x"], 1, fold=index % 2)
    np.testing.assert_array_equal(stats.counts, reference.counts)
    for name in ("mean", "mean_sq", "mean_abs", "zero_fraction"):
        np.testing.assert_allclose(getattr(stats, name), getattr(reference, name), rtol=1e-5, atol=1e-6)
    for fold in (0, 1):
        np.testing.assert_allclose(stats.second_moment(fold), reference.second_moment(fold), rtol=1e-4, atol=1e-6)


def test_sequence_first_tensors_are_joined_on_their_batch_axis_and_give_the_same_statistics():
    # An LSTM reads [steps, N, features]: its batch is its one symbolic size, on axis 1.
    model = make_model([helper.make_node("Transpose", ["x"], ["seq"], perm=[1, 0, 2])], {"x": ["N", 7, 6]}, ["seq"], [])
    x = np.random.default_rng(3).normal(size=(64, 7, 6)).astype(np.float32)
    batches = [{"x": x[i:i + 2]} for i in range(0, 64, 2)]
    spec = TensorSpec(2, 6, (7, "N", 6))
    assert [len(b["x"]) for b in calibrate.recording_batches(model, batches, [spec])] == [8] * 8
    stats = collect_stats(model, {"seq": spec}, batches, gram=True, sums=SUMS)["seq"]
    reference = ChannelStats(6)
    reference.add_values(x.transpose(1, 0, 2), 2)
    assert stats.count == reference.count == 64 * 7
    for name in ("mean", "mean_sq", "mean_abs", "zero_fraction"):
        np.testing.assert_allclose(getattr(stats, name), getattr(reference, name), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.second_moment(), reference.second_moment(), rtol=1e-4, atol=1e-6)


def test_batches_stay_as_given_where_they_cannot_be_joined():
    x = np.random.default_rng(3).normal(size=(64, 3, 8, 8)).astype(np.float32)
    batches = [{"x": x[i:i + 2]} for i in range(0, 64, 2)]
    spec = TensorSpec(1, 3, ("N", 3, 8, 8))
    relu = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    fixed = make_model(relu, {"x": [2, 3, 8, 8]}, ["y"], [])
    assert calibrate.recording_batches(fixed, batches, [spec]) is batches  # the model takes 2 samples only
    free = make_model(relu, {"x": ["N", 3, "H", "W"]}, ["y"], [])
    assert calibrate.recording_batches(free, batches, [TensorSpec(1, 3, ("N", 3, "H", "W"))]) is batches
    sizes = [{"x": x[i:i + 2, :, :4 + i % 4]} for i in range(0, 64, 2)]  # images of several sizes
    assert calibrate.recording_batches(free, sizes, [spec]) is sizes
    few = batches[:15]  # joined in pairs, fewer than 8 would be left
    assert calibrate.recording_batches(free, few, [spec]) is few
    huge = TensorSpec(1, 3, ("N", 3, 4096, 4096))  # 192 MiB a sample: one batch is already too large
    assert calibrate.recording_batches(free, batches, [huge]) is batches


def test_a_mean_alone_is_taken_over_every_position():
    # The spec asks for a 1-in-9 sample (a Gram matrix's budget); a mean needs no sample and is exact
    # (for channels that fill the blocks of ONNX Runtime's conv layout).
    rng = np.random.default_rng(13)
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], {"x": ["N", 16, 12, 12]}, ["y"], [])
    x = rng.normal(size=(6, 16, 12, 12)).astype(np.float32)
    spec = TensorSpec(1, 16, ("N", 16, 12, 12), sample_fraction=1 / 9)
    stats = collect_stats(model, {"y": spec}, [{"x": x[:3]}, {"x": x[3:]}])["y"]
    assert stats.count == 6 * 144
    np.testing.assert_allclose(stats.mean, np.maximum(x, 0).mean(axis=(0, 2, 3)), rtol=1e-5)


def test_tensors_that_cannot_be_negative_take_their_mean_for_their_mean_absolute_value():
    rng = np.random.default_rng(12)
    inits = [_init("w", rng.normal(size=(4, 4, 1, 1))), _init("lo", np.float32(0.0)), _init("neg", np.float32(-1.0)),
             _init("hi", np.float32(6.0)), _init("roi", np.zeros(0)), _init("scales", [1.0, 1.0, 2.0, 2.0])]
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[1, 1]),
             helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Concat", ["p", "r"], ["cat"], axis=1),
             helper.make_node("Clip", ["c", "lo", "hi"], ["clip0"]), helper.make_node("Clip", ["c", "neg", "hi"], ["clip1"]),
             helper.make_node("Add", ["clip0", "p"], ["sum"]), helper.make_node("Add", ["clip1", "p"], ["mixed"]),
             helper.make_node("Resize", ["r", "roi", "scales"], ["cubic"], mode="cubic")]
    outputs = ["p", "c", "cat", "clip0", "clip1", "sum", "mixed", "cubic"]
    model = make_model(nodes, {"x": ["N", 4, 6, 6]}, outputs, inits, opset=13)
    graph = gs.import_onnx(model)
    known: dict = {}
    tensors = graph.tensors()
    signs = {name: calibrate._nonnegative(tensors[name], known) for name in outputs}
    assert signs == {"p": True, "c": False, "cat": True, "clip0": True, "clip1": False, "sum": True, "mixed": False,
                     "cubic": False}
    # Recorded with the shortcut, the mean |x| of a ReLU's output is its mean, as numpy says.
    x = rng.normal(size=(8, 4, 6, 6)).astype(np.float32)
    spec = TensorSpec(1, 4, ("N", 4, 6, 6), nonnegative=True)
    x[:, 2, :3] = 1e-30  # tiny but not zero: the zero indicator of a tensor >= 0 scales x by 2^126
    stats = collect_stats(model, {"p": spec}, [{"x": x[:4]}, {"x": x[4:]}], sums=("total_abs", "zeros"))["p"]
    np.testing.assert_allclose(stats.mean_abs, np.abs(np.maximum(x, 0)).mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(stats.zero_fraction, (np.maximum(x, 0) == 0).mean(axis=(0, 2, 3)), rtol=1e-6)
    assert stats.zero_fraction[2] < 0.3 < np.delete(stats.zero_fraction, 2).min()


@pytest.mark.parametrize("opset", [10, 13])  # before 11 Clip takes its bounds as attributes
@pytest.mark.parametrize("op", ["Relu", "Identity"])
@pytest.mark.parametrize("shape, axis", [(("N", 4, 6, 6), 1), (("N", 4, 12, 12), 1), (("N", 6, 4), 2), (("N", 4, 1, 1), 1)])
def test_the_zero_fraction_counts_what_a_relu_would_zero(opset, op, shape, axis):
    # apoz reads the zeros of a ReLU of the tensor: a signed tensor (a SiLU's output, say) counts x <= 0.
    # A feature map's zeros are counted by a fused Conv at every 3rd row and column of a 12x12 map, by a
    # HardSigmoid at every position of the others, and its mean is taken over the whole map (a 1x1 map, a
    # squeeze-excite vector, is its own mean).
    rng = np.random.default_rng(14)
    model = make_model([helper.make_node(op, ["x"], ["y"], name="op")], {"x": list(shape)}, ["y"], [], opset=opset)
    x = rng.normal(size=(64 if shape[2:] == (1, 1) else 4, *shape[1:])).astype(np.float32)
    x[:, :2] = np.where(x[:, :2] > 0, 1e-30, x[:, :2])  # tiny but positive: not counted
    spec = TensorSpec(axis, shape[axis], shape, sample_fraction=1 / 9 if 12 in shape else 1.0, nonnegative=op == "Relu")
    stats = collect_stats(model, {"y": spec}, [{"x": x}], sums=("zeros",))["y"]
    sample = x[:, :, ::3, ::3] if 12 in shape else x
    expected = np.moveaxis(sample <= 0, axis, -1).reshape(-1, shape[axis]).mean(axis=0)
    np.testing.assert_allclose(stats.zero_fraction, expected, rtol=1e-6)
    np.testing.assert_allclose(stats.mean, np.moveaxis(np.maximum(x, 0) if op == "Relu" else x, axis, -1)
                               .reshape(-1, shape[axis]).mean(axis=0), rtol=1e-5, atol=1e-6)
    assert 0.3 < stats.zero_fraction.min() and stats.zero_fraction.max() < 0.7


def test_statistics_hold_only_the_sums_that_were_asked_for():
    model = two_convs(np.random.default_rng(5).normal(size=(8, 3, 3, 3)), np.zeros(8))
    stats = collect_stats(model, {"x": TensorSpec(1, 3, ("N", 3, 8, 8))}, calibration(32), sums=("total_abs",))["x"]
    assert set(stats.sums) == {"total", "total_abs"} and not stats.has_gram
    with pytest.raises(ValueError, match="total_sq was not recorded"):
        _ = stats.variance


@pytest.mark.parametrize("channels, last", [(2, False), (16, False), (3, True)])
@pytest.mark.parametrize("fit", [False, True])
def test_statistics_of_large_maps_use_an_even_sample_of_positions(channels, last, fit):
    # A 1-in-16 sample would take every 4th row and column, even ones only; the stride is odd instead:
    # 5 for statistics, 3 (more positions) for fits. A depthwise Conv samples 2 channels, a MaxPool 16
    # (both from the first position), a Slice a channels-last map (from the middle of the first step).
    step = 3 if fit else 5
    shape = [4, 32, 32, channels] if last else [4, channels, 32, 32]
    x = np.random.default_rng(6).normal(size=shape).astype(np.float32)
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], {"x": ["N", *shape[1:]]}, ["y"], [])
    spec = TensorSpec(3 if last else 1, channels, ("N", *shape[1:]), sample_fraction=1 / 16, fit=fit)
    stats = collect_stats(model, {"y": spec}, [{"x": x}], sums=("total", "total_sq"))["y"]
    start = step // 2 if last else 0
    sample = (np.maximum(x, 0)[:, start::step, start::step] if last
              else np.maximum(x, 0)[:, :, start::step, start::step])
    axes = (0, 1, 2) if last else (0, 2, 3)
    assert stats.count == sample.size // channels
    np.testing.assert_allclose(stats.mean, sample.mean(axis=axes), rtol=1e-5)
    np.testing.assert_allclose(stats.mean_sq, np.square(sample).mean(axis=axes), rtol=1e-5)


def test_calibration_gives_held_out_fidelity_accuracy_and_compensation_is_more_faithful(tmp_path):
    data = np.load(MODELS / "fashion_mnist_test.npz")
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=data["x"][:500], labels=data["labels"][:500])  # [N, 28, 28] uint8: the channel dim is added
    # The fixture expects normalised input; the raw pixels still exercise every step.
    errors = {}
    for compensate in (True, False):
        result = onnxprune.prune(str(MODELS / "fashion_mnist.ts.onnx"), ratio=0.5, calib=str(calib),
                                 compensate=compensate, held_out=0.2)
        report = result.report
        assert report["calibration"]["calibration_samples"] == 400
        assert report["calibration"]["held_out_samples"] == report["fidelity"]["samples"] == 100
        assert report["fidelity"]["outputs"][0]["shape"] == [100, 10]  # all held-out samples, not one batch
        assert report["accuracy"]["samples"] == 100 and 0 <= report["accuracy"]["pruned"] <= 1
        assert bool(report["compensation"]) == compensate
        errors[compensate] = max(o["relative_l2"] for o in report["fidelity"]["outputs"])
    assert errors[True] < errors[False]


@pytest.mark.parametrize("export", ["ts", "dynamo"])
def test_compensation_of_the_yolo_fixture_on_natural_images(export):
    # Its 4x4 maps feed narrow 1x1 convs: with too few sampled positions, a spurious fit once broke an
    # output (and compensation was dropped as a whole); both exports must now gain from it.
    options = {"ratio": 0.3, "calib": str(MODELS / "calib_images"),
               "images": onnxprune.ImageOptions(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))}
    result = onnxprune.prune(str(MODELS / f"yolo.{export}.onnx"), **options)
    plain = onnxprune.prune(str(MODELS / f"yolo.{export}.onnx"), compensate=False, **options)
    assert result.report["compensation"] and not result.notes
    error = max(o.relative_l2 for o in result.evaluation.outputs)
    assert error < 0.5 * max(o.relative_l2 for o in plain.evaluation.outputs)


def test_refits_sample_odd_and_even_positions_of_upsampled_maps():
    # unet's decoder upsamples 2x: its maps differ between even and odd positions, so fits on every 2nd
    # row and column from the first (even ones only) left a relative error of 0.021; odd strides: 0.0027.
    options = {"ratio": 0.5, "calib": str(MODELS / "calib_images"),
               "images": onnxprune.ImageOptions(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))}
    result = onnxprune.prune(str(MODELS / "unet.ts.onnx"), **options)
    assert max(o.relative_l2 for o in result.evaluation.outputs) < 0.01


def test_more_refit_passes_refit_a_deep_model_more_faithfully(tmp_path, capsys):
    # yolo's consumers lie 21 deep: in 8 passes, neighbouring depths share a pass and the deeper one is
    # fitted to inputs that its upstream's own refit then changes; in 32 each depth has its own.
    options = {"ratio": 0.3, "calib": str(MODELS / "calib_images"),
               "images": onnxprune.ImageOptions(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))}
    errors = [max(o.relative_l2 for o in onnxprune.prune(str(MODELS / "yolo.ts.onnx"), refit_passes=passes,
                                                          **options).evaluation.outputs) for passes in (8, 32, None)]
    assert errors[1] < 0.5 * errors[0]
    # By default a model this small (3.6 MMACs, 51 samples) gets a pass per depth: the same fits as 32.
    assert errors[2] == errors[1]
    assert main([str(MODELS / "yolo.ts.onnx"), "--calib", str(MODELS / "calib_images"), "--refit-passes", "-1",
                 "-o", str(tmp_path / "out.onnx")]) == 2
    assert "refit-passes must be 0 or more" in capsys.readouterr().err and not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("samples", [48, 32000])
def test_refit_passes_by_default_fit_the_budget_of_model_cost(samples):
    # yolo: 3.6 MMACs a sample, original and pruned model each run once a pass. 48 samples leave room
    # for a pass per depth (21); 32,000 would cost more than 8 passes allow, and get the 8.
    model = onnxprune.model.load_model(MODELS / "yolo.ts.onnx")
    batch = {"input": np.zeros((16, 3, 32, 32), np.float32)}
    activations = candidates.Activations([batch] * (samples // 16), Importance.L1, compensate=True)
    builder = candidates.CandidateBuilder(candidates.Loaded(model, "yolo", None, False), None, activations=activations)
    passes = builder._refit_passes(builder.analysis())
    assert passes >= 21 if samples == 48 else passes == 8
    assert candidates.CandidateBuilder(candidates.Loaded(model, "yolo", None, False), None, activations=replace(
        activations, refit_passes=3))._refit_passes(builder.analysis()) == 3


def test_refit_passes_by_default_stay_at_8_where_the_model_cost_is_unknown():
    # A dynamic image size: symbolic dims would count as 1 and the MACs as next to nothing.
    model = two_convs(np.random.default_rng(9).normal(size=(8, 3, 3, 3)), np.zeros(8))
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    model.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "W"
    activations = candidates.Activations(calibration(16), Importance.L1, compensate=True)
    builder = candidates.CandidateBuilder(candidates.Loaded(model, "m", None, False), None, activations=activations)
    assert builder._refit_passes(builder.analysis()) == 8


def test_cli_rejects_calibration_data_of_the_wrong_shape(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, input=np.zeros((10, 3, 28, 28), np.float32))
    out = tmp_path / "o.onnx"
    code = main([str(MODELS / "fashion_mnist.ts.onnx"), "-o", str(out), "--calib", str(bad), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not out.exists()
    assert len(err.splitlines()) == 1 and "'input'" in err and "[N, 1, 28, 28]" in err
    wrong_name = tmp_path / "names.npz"
    np.savez(wrong_name, image=np.zeros((10, 1, 28, 28), np.float32), other=np.zeros((10, 1), np.float32))
    assert main([str(MODELS / "fashion_mnist.ts.onnx"), "-o", str(out), "--calib", str(wrong_name), "-q"]) == 2
    assert "input" in capsys.readouterr().err and not out.exists()


def test_cli_warns_when_an_activation_criterion_has_no_calibration_data(tmp_path):
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "onnxprune", str(MODELS / "resnet.ts.onnx"), "-o", str(out),
                           "--importance", "activation", "--no-latency", "--report", str(report)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and out.exists()
    assert "warning" in proc.stderr and "--calib" in proc.stderr and "Traceback" not in proc.stderr
    # The warning is one line, printed once (not again as a Python warning with its source line).
    lines = proc.stderr.splitlines()
    assert all(line.startswith("onnxprune: warning: ") for line in lines), lines
    assert len(lines) == 1 and "random inputs" in lines[0]
    assert "warning" not in proc.stdout and "on 16 seeded random inputs" in proc.stdout  # the summary
    notes = json.loads(report.read_text())["notes"]
    assert any("random inputs" in n for n in notes) and any("compensation needs calibration data" in n for n in notes)


@pytest.mark.parametrize("batch, batches", [(1, 16), (4, 4)])
def test_a_fixed_batch_model_is_validated_on_as_many_random_inputs(batch, batches):
    model = onnx.load(MODELS / "resnet.ts.onnx")
    model.graph.input[0].type.tensor_type.shape.dim[0].Clear()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = batch
    del model.graph.value_info[:]
    result = onnxprune.prune(model, ratio=0.3)
    fidelity = result.report["fidelity"]
    assert fidelity["samples"] == 16 and fidelity["outputs"][0]["shape"] == [16, 10]  # 2 inputs at batch 1 before
    assert result.evaluation.outputs[0].cosine > 0.5


def test_cli_image_folder_calibration_with_compensation(tmp_path):
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    code = main([str(MODELS / "resnet.ts.onnx"), "-o", str(out), "--calib", str(MODELS / "calib_images"),
                 "--image-mean", "0.485,0.456,0.406", "--image-std", "0.229,0.224,0.225", "--ratio", "0.5",
                 "--importance", "fluctuation", "--no-latency", "--report", str(report), "-q"])
    assert code == 0 and out.exists()
    data = json.loads(report.read_text())
    assert data["calibration"]["calibration_samples"] + data["calibration"]["held_out_samples"] == 64
    assert data["compensation"] and data["settings"]["calib"].endswith("calib_images")


def test_statistics_of_models_too_large_to_serialize_go_through_external_data(monkeypatch):
    # Models over protobuf's 2 GB limit are handed to ONNX Runtime as files with external data.
    model = two_convs(np.random.default_rng(8).normal(size=(8, 3, 3, 3)), np.zeros(8))
    spec = {"h": TensorSpec(1, 8, ("N", 8, 8, 8))}
    in_memory = collect_stats(model, spec, calibration(), gram=True)["h"]
    monkeypatch.setattr("onnxprune.calibrate.PROTOBUF_SAFE_BYTES", 100)
    through_files = collect_stats(model, spec, calibration(), gram=True)["h"]
    np.testing.assert_allclose(through_files.second_moment(), in_memory.second_moment(), rtol=1e-6)
    assert len(model.graph.node) == 3 and all(i.HasField("raw_data") for i in model.graph.initializer)


@pytest.mark.parametrize("sums", [("total",), ("total", "zeros"), SUMS])
def test_the_sums_beside_a_sampled_gram_matrix_are_of_its_sample(sums):
    # A 12 x 12 map sampled at every 3rd row and column: its sums are per-sample means of the Gram matrix's
    # 16 positions (packed with other tensors' means), whatever the criterion reads, and the count is known.
    rng = np.random.default_rng(12)
    model = make_model([helper.make_node("Identity", ["x"], ["y"], name="id")], {"x": ["N", 4, 12, 12]}, ["y"], [])
    batches = [{"x": (rng.normal(size=(n, 4, 12, 12)) + np.arange(4).reshape(4, 1, 1)).astype(np.float32)}
               for n in (4, 6, 5)]
    spec = TensorSpec(1, 4, ("N", 4, 12, 12), sample_fraction=1 / 9)
    stats = collect_stats(model, {"y": spec}, batches, gram=True, sums=sums)["y"]
    reference = ChannelStats(4)
    for index, batch in enumerate(batches):
        reference.add_values(batch["x"][:, :, ::3, ::3], 1, fold=index % 2)
    np.testing.assert_array_equal(stats.counts, reference.counts)
    assert set(stats.sums) == {"total", "total_sq", *sums}
    for fold in (0, 1):
        np.testing.assert_allclose(stats.second_moment(fold), reference.second_moment(fold), rtol=1e-5, atol=1e-6)
    for key in stats.sums:
        np.testing.assert_allclose(stats.sums[key], reference.sums[key], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("sums", [("total",), ("total", "zeros"), ("total", "total_abs", "zeros"), ("total", "total_sq")])
def test_conv_outputs_whose_channels_do_not_fill_blocks_are_averaged_by_depthwise_convs(sums):
    # 12 channels of a Conv: ONNX Runtime keeps them in its blocked layout, padded to whole blocks, which
    # pooling would copy them out of, so their means are depthwise Convs (a dilated kernel reads the sample:
    # every 3rd row and column of 8 x 8; apoz takes the whole map's mean), and |x| is 2 max(x, 0) - x.
    rng = np.random.default_rng(13)
    model = two_convs(rng.normal(size=(12, 3, 3, 3)), rng.normal(size=12), relu=False)
    spec = TensorSpec(1, 12, ("N", 12, 8, 8), sample_fraction=1 / 9)
    assert calibrate._in_blocks(model.graph, {"a": spec, "x": replace(spec, channels=3)}) == {"a"}
    builder = calibrate._StatsGraph(13)
    builder.sample_means("a", spec, sums, "k", in_blocks=True)
    assert not {"GlobalAveragePool", "ReduceL1", "Abs"} & {node.op_type for node in builder.nodes}
    batches = calibration(48)
    stats = collect_stats(model, {"a": spec}, batches, sums=sums)["a"]
    model.graph.output.append(onnx.ValueInfoProto(name="a"))
    maps = np.concatenate([run(model, batch)[1] for batch in batches])
    sample = maps[:, :, ::3, ::3]
    whole = set(sums) == {"total", "zeros"}  # apoz's
    np.testing.assert_allclose(stats.mean, (maps if whole else sample).mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    if "zeros" in sums:
        np.testing.assert_allclose(stats.zero_fraction, (sample <= 0).mean(axis=(0, 2, 3)), rtol=1e-6)
        assert 0.1 < stats.zero_fraction.mean() < 0.9
    if "total_abs" in sums:
        np.testing.assert_allclose(stats.mean_abs, np.abs(sample).mean(axis=(0, 2, 3)), rtol=1e-5)
    if "total_sq" in sums:
        np.testing.assert_allclose(stats.mean_sq, np.square(sample).mean(axis=(0, 2, 3)), rtol=1e-5)


def test_the_maps_onnx_runtime_keeps_blocked_are_found_from_their_producers():
    # Conv outputs, a SiLU (Mul of x and its Sigmoid), a Clip fused into its Conv, a residual Add of blocked
    # maps are blocked (as ONNX Runtime's optimized model shows); a Clip of a Conv output that others read
    # too (not fused), a Slice's output, a Relu of it, a Clip after a Relu and an Add with it are not.
    rng = np.random.default_rng(14)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1] * 4),
             helper.make_node("Sigmoid", ["c"], ["g"], name="sigmoid"),
             helper.make_node("Mul", ["c", "g"], ["silu"], name="silu"),
             helper.make_node("Clip", ["c"], ["six"], name="clip"),
             helper.make_node("Add", ["silu", "c"], ["residual"], name="add"),
             helper.make_node("Slice", ["c", "starts", "ends", "axes"], ["part"], name="slice"),
             helper.make_node("Relu", ["part"], ["part_relu"], name="relu"),
             helper.make_node("Clip", ["part_relu"], ["part_clip"], name="clip2"),
             helper.make_node("Add", ["part", "part_relu"], ["mixed"], name="add2"),
             helper.make_node("Conv", ["x", "w"], ["c2"], name="conv2", pads=[1] * 4),
             helper.make_node("Clip", ["c2"], ["fused"], name="clip3")]
    inits = [_init("w", rng.normal(size=(8, 3, 3, 3))), numpy_helper.from_array(np.array([0]), "starts"),
             numpy_helper.from_array(np.array([4]), "ends"), numpy_helper.from_array(np.array([1]), "axes")]
    outputs = ["silu", "six", "residual", "part_clip", "mixed", "fused"]
    model = make_model(nodes, {"x": ["N", 3, 8, 8]}, outputs, inits)
    names = ["c", "g", *outputs, "part", "part_relu"]
    specs = {name: TensorSpec(1, 8, ("N", 8, 8, 8)) for name in names}
    assert calibrate._in_blocks(model.graph, specs) == {"c", "g", "silu", "residual", "fused"}


def test_wide_tensors_gather_rows_and_give_the_same_gram_matrix():
    # 256 channels but 4 x 2 x 2 = 16 positions per batch: the rows are smaller than the Gram matrix, so
    # they leave ONNX Runtime and are multiplied in numpy.
    rng = np.random.default_rng(10)
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], {"x": ["N", 256, 2, 2]}, ["y"], [])
    batches = [{"x": rng.normal(size=(4, 256, 2, 2)).astype(np.float32)} for _ in range(6)]
    spec = TensorSpec(1, 256, ("N", 256, 2, 2))
    assert _gram_mode(spec, 4) == "rows"
    stats = collect_stats(model, {"y": spec}, batches, gram=True)["y"]
    reference = ChannelStats(256)
    for index, batch in enumerate(batches):
        reference.add_values(np.maximum(batch["x"], 0), 1, fold=index % 2)
    for fold in (0, 1, None):
        np.testing.assert_allclose(stats.second_moment(fold), reference.second_moment(fold), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats.variance, reference.variance, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("diagonal", [False, True])
def test_paired_moments_keep_float64_precision_for_rows_far_from_zero(diagonal):
    # A refit corrects errors of 1e-4 of a post-ReLU tensor's scale: its moments are taken in float32 of
    # rows less their means, so the covariance of z stays exact where plain float32 products lose it.
    rng = np.random.default_rng(11)
    x = (rng.normal(size=(24, 6000)) * 0.1 + 5).astype(np.float32)
    z = x[:16] + (rng.normal(size=(16, 6000)) * 1e-3).astype(np.float32)
    stats = calibrate.PairedStats.empty(24, 16, diagonal=diagonal)
    stats.add(1, x[:, :3000], z[:, :3000])
    stats.add(1, x[:, 3000:], z[:, 3000:])
    x64, z64 = x.astype(np.float64), np.vstack([z.astype(np.float64), np.ones((1, 6000))])
    xx, xz, zz = stats.moments(1)
    np.testing.assert_allclose(xx, (x64 * x64).mean(1) if diagonal else x64 @ x64.T / 6000, rtol=1e-9)
    np.testing.assert_allclose(xz, x64 @ z64.T / 6000, rtol=1e-9)
    np.testing.assert_allclose(zz, z64 @ z64.T / 6000, rtol=1e-9)
    covariance = zz[:-1, :-1] - np.outer(zz[:-1, -1], zz[-1, :-1])
    reference = np.cov(z64[:-1], bias=True)
    np.testing.assert_allclose(covariance, reference, rtol=1e-5, atol=1e-6 * np.abs(reference).max())
    assert stats.counts.tolist() == [0, 6000]


@pytest.mark.parametrize("op", ["MatMul", "Einsum"])
def test_matmul_consumers_are_compensated_without_a_bias(op):
    # MatMul has no bias input, so only the linear part of the fit is used (and here it is exact); an Einsum
    # linear layer ("ntd,dh->nth") is the same product.
    rng = np.random.default_rng(11)
    w1, w2 = rng.normal(size=(6, 5)), rng.normal(size=(5, 3))
    w1[:, 4] = 2.0 * w1[:, 1] - w1[:, 2]  # feature 4 = 2 f1 - f2
    attrs = {"equation": "ntd,dh->nth"} if op == "Einsum" else {}
    nodes = [helper.make_node(op, ["x", "w1"], ["h"], name="mm1", **attrs),
             helper.make_node(op, ["h", "w2"], ["y"], name="mm2", **attrs)]
    model = make_model(nodes, {"x": ["N", 4, 6]}, ["y"], [_init("w1", w1), _init("w2", w2)])
    result = onnxprune.prune(model, ratio=0.2, round_to=1, importance="redundancy",
                             calib=[{"x": rng.normal(size=(32, 4, 6)).astype(np.float32)}])
    assert len(removed_by(result, "mm2")) == 1
    assert len(next(n for n in result.model.graph.node if n.name == "mm2").input) == 2
    feeds = {"x": rng.normal(size=(3, 4, 6)).astype(np.float32)}
    assert relative_error(run(model, feeds)[0], run(result.model, feeds)[0]) < 1e-4


def test_iterative_pruning_records_and_compensates_every_round():
    rng = np.random.default_rng(12)
    model = two_convs(rng.normal(size=(16, 3, 3, 3)), rng.normal(size=16), c_out=8)
    options = {"target_macs": 0.5, "iterative": 2, "round_to": 1, "importance": "wanda", "calib": calibration()}
    result = onnxprune.prune(model, **options)
    plain = onnxprune.prune(model, compensate=False, **options)
    assert result.pruned.macs <= 0.5 * result.original.macs and result.report["compensation"]
    assert max(o.relative_l2 for o in result.evaluation.outputs) < max(o.relative_l2 for o in plain.evaluation.outputs)


def _blas_threads() -> list[int]:
    return [info["num_threads"] for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"]


def test_products_between_onnx_runtime_runs_take_one_blas_thread(monkeypatch):
    # Between ONNX Runtime's runs on every core, multi-threaded BLAS contends with its threads (the refit's
    # products); elsewhere BLAS keeps its threads: the recording takes no products between its runs, and
    # the limit itself slows them.
    before = _blas_threads()
    assert before, "numpy links a BLAS that threadpoolctl sees"
    seen: dict[str, list[list[int]]] = {"recording": [], "refit": []}

    def spy(name, original):
        def observed(*args, **kwargs):
            seen[name].append(_blas_threads())
            return original(*args, **kwargs)
        return observed

    monkeypatch.setattr(calibrate, "_add_reduced", spy("recording", calibrate._add_reduced))
    monkeypatch.setattr(calibrate.PairedStats, "add", spy("refit", calibrate.PairedStats.add))
    model = two_convs(np.random.default_rng(14).normal(size=(16, 3, 3, 3)), np.zeros(16), c_out=8)
    result = onnxprune.prune(model, ratio=0.5, importance="redundancy", calib=calibration())
    assert result.report["compensation"]
    assert seen["recording"] and all(t == before for t in seen["recording"])
    assert seen["refit"] and all(t == [1] * len(before) for t in seen["refit"])
    assert _blas_threads() == before


def test_prune_takes_a_generator_of_labelled_batches_or_one_array():
    data = np.load(MODELS / "fashion_mnist_test.npz")
    x = ((data["x"][:240].astype(np.float32) / 255 - 0.2860) / 0.3530)[:, None]

    def batches():  # read once, as a stream from a user's data pipeline would be
        for start in range(0, len(x), 24):
            yield {"input": x[start:start + 24], "labels": data["labels"][start:start + 24].astype(np.int64)}

    result = onnxprune.prune(str(MODELS / "fashion_mnist.ts.onnx"), ratio=0.3, calib=batches(), calib_samples=200,
                             importance="wanda")
    report = json.loads(json.dumps(result.report))
    assert report["settings"]["calib"] == "Python iterable"
    assert report["calibration"]["calibration_samples"] + report["calibration"]["held_out_samples"] == 200
    assert report["accuracy"]["samples"] == report["calibration"]["held_out_samples"] == 40
    assert report["accuracy"]["pruned"] >= report["accuracy"]["original"] - 0.1
    from_array = onnxprune.prune(str(MODELS / "fashion_mnist.ts.onnx"), ratio=0.3, calib=x, importance="wanda")
    assert from_array.report["settings"]["calib"] == "Python array"
    assert from_array.report["calibration"]["held_out_samples"] == 48 and from_array.report["accuracy"] is None


def test_a_refit_recording_runs_only_the_nodes_its_outputs_read():
    # ONNX Runtime runs every node of a session whatever the outputs asked for: a recording of an early
    # tensor leaves the rest of the model out. The tail here (y's 768 values into rows of 5) fails if it runs.
    model = two_convs(np.random.default_rng(5).normal(size=(8, 3, 3, 3)), np.zeros(8))
    model.graph.initializer.append(numpy_helper.from_array(np.array([5, -1], np.int64), "tail_shape"))
    model.graph.node.append(helper.make_node("Reshape", ["y", "tail_shape"], ["tail"], name="tail"))
    model.graph.output[0].CopyFrom(onnx.ValueInfoProto(name="tail"))
    builder = _StatsGraph(17)
    builder.outputs = [builder.rows("h", TensorSpec(1, 8, ("N", 8, 8, 8)), "rec")]
    before = model.SerializeToString()
    x = calibration(3)[0]
    with pytest.raises(Exception, match="Reshape"):
        builder.session(model).run(builder.outputs, x)
    sess = builder.session(model, upstream=True)
    assert [o.name for o in sess.get_outputs()] == builder.outputs
    (rows,) = sess.run(builder.outputs, x)
    h = run(onnx.utils.Extractor(model).extract_model(["x"], ["h"]), x)[0]
    np.testing.assert_allclose(rows, h.transpose(1, 0, 2, 3).reshape(8, -1), rtol=1e-5, atol=1e-6)
    assert model.SerializeToString() == before  # restored: nodes, initializers and outputs


def test_nodes_read_by_a_subgraph_are_upstream_of_it():
    inner = helper.make_graph([helper.make_node("Identity", ["outer"], ["branch"])], "branch", [],
                              [helper.make_tensor_value_info("branch", TensorProto.FLOAT, None)])
    graph = helper.make_graph([
        helper.make_node("Relu", ["x"], ["outer"], name="outer"),
        helper.make_node("Relu", ["x"], ["unused"], name="unused"),
        helper.make_node("ReduceMax", ["x"], ["flag_f"], name="flag_f", keepdims=0),
        helper.make_node("Cast", ["flag_f"], ["flag"], name="flag", to=TensorProto.BOOL),
        helper.make_node("If", ["flag"], ["chosen"], name="if", then_branch=inner, else_branch=inner)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("chosen", TensorProto.FLOAT, None)])
    assert calibrate.upstream_nodes(graph, ["chosen"]) == [0, 2, 3, 4]
    assert calibrate.upstream_nodes(graph, ["flag", "unused"]) == [1, 2, 3]


def test_a_refit_pass_rewrites_only_the_consumers_upstream_of_its_recording(monkeypatch):
    # x -> conv1 -> relu -> h; conv2(h) + h -> r -> conv3 -> y. A pass recording h (and, for conv2's kernel
    # refit, the Add's other term) depends on conv1 and not on conv3; rewriting only those consumers in
    # each pass prunes the same as rewriting all of them.
    first, inits1 = conv("conv1", "x", "a", 3, 8, seed=1)
    second, inits2 = conv("conv2", "h", "b", 8, 8, seed=2)
    third, inits3 = conv("conv3", "r", "y", 8, 4, seed=3)
    nodes = [first, helper.make_node("Relu", ["a"], ["h"], name="relu"), second,
             helper.make_node("Add", ["b", "h"], ["r"], name="add"), third]
    model = make_model(nodes, {"x": ["N", 3, 8, 8]}, ["y"], inits1 + inits2 + inits3)
    assert candidates._upstream_names(gs.import_onnx(model), {"h"}) == {"conv1", "relu", "conv2", "add"}
    assert candidates._upstream_names(gs.import_onnx(model), {"r"}) == {"conv1", "relu", "conv2", "add"}

    def weights() -> dict[str, np.ndarray]:
        result = onnxprune.prune(model, ratio=0.5, round_to=1, calib=calibration(64), latency=False)
        assert {r["node"] for r in result.report["compensation"]} >= {"conv2", "conv3"}
        return {t.name: numpy_helper.to_array(t) for t in result.model.graph.initializer}

    upstream_only = weights()
    monkeypatch.setattr(candidates, "_upstream_names", lambda graph, inputs: None)
    every_consumer = weights()
    assert upstream_only.keys() == every_consumer.keys()
    for name, values in upstream_only.items():
        np.testing.assert_array_equal(values, every_consumer[name])
