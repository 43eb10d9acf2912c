"""Bad and unusual input: corrupt files, odd dtypes and opsets, determinism, and never a half-written file."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import onnx
import pytest
from helpers import MODELS, assert_matches_masked, conv, make_model, run
from onnx import TensorProto, helper, numpy_helper

import onnxprune
from onnxprune import validate
from onnxprune.cli import main
from onnxprune.latency import LatencyComparison, LatencyStats
from onnxprune.model import export_graph, external_data_bytes, import_graph, save_model_atomic
from onnxprune.pipeline import _slower, slower_message

X = {"x": ["N", 3, 8, 8]}


def _chain(opset: int = 17) -> onnx.ModelProto:
    first, inits1 = conv("conv1", "x", "a", 3, 8, seed=1)
    last, inits2 = conv("conv2", "m", "y", 8, 4, seed=2)
    return make_model([first, helper.make_node("Relu", ["a"], ["m"]), last], X, ["y"], inits1 + inits2, opset=opset)


@pytest.mark.parametrize("seed", range(16))
def test_corrupt_model_file_fails_cleanly_or_prunes(tmp_path, capsys, seed):
    data = bytearray((MODELS / "resnet.ts.onnx").read_bytes())
    rng = np.random.default_rng(seed)
    if seed % 2:
        data = data[: int(rng.integers(1, len(data)))]
    else:
        for pos in rng.integers(0, len(data), size=int(rng.integers(1, 30))):
            data[pos] ^= int(rng.integers(1, 256))
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(bytes(data))
    out = tmp_path / "out.onnx"
    code = main([str(path), "-o", str(out)])
    err = capsys.readouterr().err
    assert code in (0, 2)
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and err.startswith("onnxprune: error:")
        assert not out.exists()
    assert path.read_bytes() == bytes(data)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary files left


def test_same_input_gives_byte_identical_output(tmp_path):
    outputs = []
    for name in ("a.onnx", "b.onnx"):
        assert main([str(MODELS / "yolo.ts.onnx"), "-o", str(tmp_path / name), "--ratio", "0.4"]) == 0
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]
    first = onnxprune.prune(MODELS / "unet.dynamo.onnx", ratio=0.3).model.SerializeToString()
    assert onnxprune.prune(MODELS / "unet.dynamo.onnx", ratio=0.3).model.SerializeToString() == first


@pytest.mark.parametrize("opset", [11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21])
def test_every_supported_opset(opset):
    model = _chain(opset)
    model.ir_version = {19: 9, 20: 9, 21: 10}.get(opset, model.ir_version)
    result = onnxprune.prune(model, ratio=0.5, round_to=1)
    assert result.pruned.params < result.original.params
    assert_matches_masked(model, result.model, result.report)


def _float16_chain() -> onnx.ModelProto:
    model = _chain()
    for init in model.graph.initializer:
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    for value in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        value.type.tensor_type.elem_type = TensorProto.FLOAT16
    return model


def test_float16_model():
    model = _float16_chain()
    result = onnxprune.prune(model, ratio=0.5, round_to=1)
    assert {i.data_type for i in result.model.graph.initializer} == {TensorProto.FLOAT16}
    assert result.pruned.params < result.original.params
    assert_matches_masked(model, result.model, result.report, tol=2e-3)


def _bfloat16_chain() -> onnx.ModelProto:
    """Weights stored in bfloat16, each behind its own Cast to float."""
    first, inits1 = conv("conv1", "x", "a", 3, 8, seed=1)
    last, inits2 = conv("conv2", "m", "y", 8, 4, seed=2)
    nodes, inits = [], []
    for init in inits1 + inits2:
        values = numpy_helper.to_array(init)
        inits.append(helper.make_tensor(f"{init.name}.bf16", TensorProto.BFLOAT16, values.shape, values.ravel().tolist()))
        nodes.append(helper.make_node("Cast", [f"{init.name}.bf16"], [init.name], to=TensorProto.FLOAT))
    return make_model([*nodes, first, helper.make_node("Relu", ["a"], ["m"]), last], X, ["y"], inits)


def test_bfloat16_stored_weights_behind_casts_stay_bfloat16():
    model = _bfloat16_chain()
    result = onnxprune.prune(model, ratio=0.5, round_to=1)
    assert {i.data_type for i in result.model.graph.initializer} == {TensorProto.BFLOAT16}
    shapes = {i.name: list(i.dims) for i in result.model.graph.initializer}
    assert shapes["conv1.w.bf16"] == [4, 3, 3, 3] and shapes["conv2.w.bf16"] == [4, 4, 3, 3]
    assert_matches_masked(model, result.model, result.report)


def test_several_inputs_and_outputs_keep_their_shapes():
    a, ia = conv("ca", "x1", "a", 3, 8, seed=1)
    b, ib = conv("cb", "x2", "b", 3, 8, seed=2)
    head1, ih1 = conv("head1", "r", "y1", 8, 2, seed=3)
    mid, im = conv("mid", "r", "c", 8, 8, seed=4)
    head2, ih2 = conv("head2", "c", "y2", 8, 5, seed=5)
    nodes = [a, b, helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Relu", ["s"], ["r"]), head1, mid, head2]
    unused = numpy_helper.from_array(np.ones(7, np.float32), "unused")
    model = make_model(nodes, {"x1": ["N", 3, 8, 8], "x2": ["N", 3, 8, 8]}, ["y1", "y2"], ia + ib + ih1 + im + ih2 + [unused])
    result = onnxprune.prune(model, ratio=0.5, round_to=1)
    assert [o.name for o in result.model.graph.output] == ["y1", "y2"]
    assert [i.name for i in result.model.graph.input] == ["x1", "x2"]
    assert result.pruned.params < result.original.params
    assert_matches_masked(model, result.model, result.report)


def test_a_scalar_output_is_compared_too():
    first, i1 = conv("first", "x", "h", 3, 8, seed=1)
    head, i2 = conv("head", "r", "y", 8, 4, seed=2)
    nodes = [first, helper.make_node("Relu", ["h"], ["r"]), head, helper.make_node("ReduceSum", ["y"], ["total"], keepdims=0)]
    model = make_model(nodes, {"x": ["N", 3, 8, 8]}, ["y", "total"], i1 + i2, opset=11)  # ReduceSum of every axis: []
    result = onnxprune.prune(model, ratio=0.5, round_to=1)
    outputs = {o["name"]: o for o in result.report["fidelity"]["outputs"]}
    assert outputs["total"]["shape"] == [] and outputs["y"]["shape"] == [16, 4, 8, 8]
    assert 0.0 < outputs["total"]["relative_l2"] and -1.0 <= outputs["total"]["cosine"] <= 1.0
    assert_matches_masked(model, result.model, result.report)


@pytest.mark.parametrize("nan", ["constant", "everywhere", "pruned too"])
def test_outputs_the_original_gives_as_nan_are_left_out_of_the_fidelity_with_a_warning(tmp_path, capsys, nan):
    # NaN in the original's output: from a constant in one channel, from the logarithm of minus a magnitude
    # (everywhere), or from the logarithm of a conv's output, where it is negative (pruning moves those).
    # Fidelity compares the values the original gives as numbers; with none, or with NaN from the pruned model
    # where the original gives numbers, it is null, and a warning says which.
    first, i1 = conv("first", "x", "h", 3, 8, seed=1)
    head, i2 = conv("head", "r", "y", 8, 4, seed=2)
    nodes, inits = [first, helper.make_node("Relu", ["h"], ["r"]), head], i1 + i2
    if nan == "constant":
        inits.append(numpy_helper.from_array(np.array([np.nan, 0, 0, 0], np.float32).reshape(1, 4, 1, 1), "holes"))
        nodes.append(helper.make_node("Add", ["y", "holes"], ["out"]))
    elif nan == "everywhere":
        nodes += [helper.make_node("Abs", ["y"], ["magnitude"]), helper.make_node("Neg", ["magnitude"], ["negative"]),
                  helper.make_node("Log", ["negative"], ["out"])]
    else:
        nodes.append(helper.make_node("Log", ["y"], ["out"]))
    path = tmp_path / "nan.onnx"
    onnx.save(make_model(nodes, {"x": ["N", 3, 8, 8]}, ["out"], inits), path)
    code = main([str(path), "--ratio", "0.5", "--round-to", "1", "--no-latency", "--report", str(tmp_path / "r.json")])
    out, err = capsys.readouterr()
    assert code == 0 and "the original model's outputs hold NaN or infinity at" in err
    fidelity = json.loads((tmp_path / "r.json").read_text())["fidelity"]["outputs"][0]
    if nan == "constant":
        assert 0.0 < fidelity["relative_l2"] < 1.0 and 0.0 < fidelity["cosine"] <= 1.0 and "cosine >= 0." in out
    else:
        assert fidelity["cosine"] is None and fidelity["relative_l2"] is None and "fidelity not measured" in out
    assert ("the pruned model's output 'out' holds NaN or infinity where the original's holds numbers" in err) == (nan == "pruned too")


def test_tensors_sliced_to_no_channels_are_kept_as_they_are():
    first, i1 = conv("first", "x", "h", 3, 8, seed=1)
    head, i2 = conv("head", "r", "y", 8, 4, seed=2)
    zero, one = numpy_helper.from_array(np.array([0], np.int64), "zero"), numpy_helper.from_array(np.array([1], np.int64), "one")
    nodes = [first, helper.make_node("Relu", ["h"], ["r"]), head,
             helper.make_node("Slice", ["r", "zero", "zero", "one"], ["none_of_r"]),  # [N, 0, 8, 8]
             helper.make_node("Slice", ["y", "zero", "zero", "one"], ["none_of_y"])]
    model = make_model(nodes, {"x": ["N", 3, 8, 8]}, ["y", "none_of_r", "none_of_y"], i1 + i2 + [zero, one], opset=13)
    result = onnxprune.prune(model, ratio=0.5, round_to=1)
    assert result.pruned.macs < result.original.macs
    shapes = {o["name"]: o["shape"] for o in result.report["fidelity"]["outputs"]}
    assert shapes["none_of_r"] == shapes["none_of_y"] == [16, 0, 8, 8]
    assert_matches_masked(model, result.model, result.report)


def test_a_model_that_needs_real_sizes_asks_for_calibration_data(tmp_path, capfd):
    first, i1 = conv("first", "x", "h", 3, 8, seed=1)
    head, i2 = conv("head", "r", "y", 8, 4, seed=2)
    # A 4x4 window without padding: random inputs with the symbolic height and width at 1 cannot run.
    pool = helper.make_node("AveragePool", ["y"], ["out"], kernel_shape=[4, 4])
    path = tmp_path / "sized.onnx"
    onnx.save(make_model([first, helper.make_node("Relu", ["h"], ["r"]), head, pool], {"x": ["N", 3, "H", "W"]},
                         ["out"], i1 + i2), path)
    assert main([str(path), "-o", str(tmp_path / "out.onnx")]) == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'x' [N, 3, ?, ?]" in err and "--calib" in err  # no log of ONNX Runtime's
    calib = tmp_path / "x.npy"
    np.save(calib, np.random.default_rng(0).standard_normal((20, 3, 8, 8)).astype(np.float32))
    assert main([str(path), "-o", str(tmp_path / "out.onnx"), "--calib", str(calib), "-q"]) == 0


def test_nothing_prunable_is_not_an_error(tmp_path, capsys):
    first, inits = conv("only", "x", "y", 3, 8, seed=1)
    path = tmp_path / "single.onnx"
    onnx.save(make_model([first], X, ["y"], inits), path)
    assert main([str(path)]) == 0
    assert "every channel group is pinned" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["single.onnx"]


def _quantized_conv_chain() -> onnx.ModelProto:
    """x -> QDQ -> Conv(3->8, int8 weights behind DequantizeLinear) -> Relu -> Conv(8->4, same)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.float32(0.05), "scale"), numpy_helper.from_array(np.int8(0), "zero")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "scale", "zero"], ["xd"])]
    for name, c_in, c_out, x, y in (("conv1", 3, 8, "xd", "h"), ("conv2", 8, 4, "r", "y")):
        inits.append(numpy_helper.from_array(rng.integers(-100, 100, (c_out, c_in, 3, 3)).astype(np.int8), f"{name}.wq"))
        nodes += [helper.make_node("DequantizeLinear", [f"{name}.wq", "scale", "zero"], [f"{name}.w"]),
                  helper.make_node("Conv", [x, f"{name}.w"], [y], name=name, pads=[1, 1, 1, 1])]
    nodes.insert(4, helper.make_node("Relu", ["h"], ["r"]))
    return make_model(nodes, X, ["y"], inits)


@pytest.mark.parametrize("options", [["--ratio", "0.5", "--round-to", "1"], ["--iterative", "2", "--target-macs", "0.6"]])
def test_a_qdq_model_sharing_one_scale_everywhere_is_pruned(tmp_path, capsys, options):
    # Quantized models were left whole; the QDQ format is pruned now (its int8 weights sliced behind their
    # DequantizeLinear). --iterative once said "the first pruning round already breaks --max-drop" here.
    path, output = tmp_path / "quantized.onnx", tmp_path / "pruned.onnx"
    onnx.save(_quantized_conv_chain(), path)
    before = path.read_bytes()
    assert main([str(path), "-o", str(output), *options]) == 0
    assert "written" in capsys.readouterr().out and path.read_bytes() == before
    pruned = onnx.load(output)
    inits = {i.name: numpy_helper.to_array(i) for i in pruned.graph.initializer}
    assert inits["conv1.wq"].dtype == np.int8 and inits["conv1.wq"].shape[0] < 8
    assert inits["scale"].shape == ()  # one scale for every tensor: nothing to slice
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert run(pruned, {"x": x})[0].shape == (2, 4, 8, 8)


def test_model_onnx_runtime_cannot_load_gets_status_2(tmp_path, capsys):
    model = _chain()
    model.graph.node[1].domain = "com.example.custom"
    model.opset_import.append(helper.make_opsetid("com.example.custom", 1))
    path = tmp_path / "custom.onnx"
    onnx.save(model, path)
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert "ONNX Runtime cannot run the input model" in err and len(err.strip().splitlines()) == 1


def test_empty_graph_and_old_opset_get_status_2(tmp_path, capsys):
    empty = helper.make_model(helper.make_graph([], "empty", [], []))
    onnx.save(empty, tmp_path / "empty.onnx")
    assert main([str(tmp_path / "empty.onnx")]) == 2
    assert "no nodes" in capsys.readouterr().err
    old = _chain()
    old.opset_import[0].version = 9
    onnx.save(old, tmp_path / "old.onnx")
    assert main([str(tmp_path / "old.onnx")]) == 2
    assert "opset 9" in capsys.readouterr().err


def test_interrupted_save_leaves_nothing_behind(tmp_path, monkeypatch):
    target = tmp_path / "out.onnx"
    target.write_bytes(b"previous")

    def interrupted(model, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_model_atomic(_chain(), target)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]


def test_pruned_model_runs_at_other_batch_sizes():
    result = onnxprune.prune(MODELS / "mobilenetv2.ts.onnx", ratio=0.5)
    for batch in (1, 5):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 128, 128)).astype(np.float32)
        assert run(result.model, {"input": x})[0].shape == (batch, 10)


def _save_external(model: onnx.ModelProto, path, location: str) -> None:
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0)


def test_tensor_data_held_in_the_proto_is_counted_from_its_dims():
    # Whether a model must go through external data is decided on these bytes, counted without copying
    # raw_data; they must match the data itself, whatever the element type.
    model = onnx.load(MODELS / "yolo.ts.onnx")
    arrays = [np.zeros((3, 5), np.float16), np.zeros(7, np.int8), np.zeros((2, 2), np.bool_), np.zeros(3, np.float64)]
    model.graph.initializer.extend(numpy_helper.from_array(a, f"extra{i}") for i, a in enumerate(arrays))
    model.graph.initializer.append(helper.make_tensor("listed", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0]))
    tensors = list(model.graph.initializer) + [a.t for n in model.graph.node for a in n.attribute if a.HasField("t")]
    expected = sum(len(t.raw_data) + 4 * len(t.float_data) for t in tensors)
    assert external_data_bytes(model) == expected > 500_000


def test_external_data_model_prunes_and_is_saved_with_external_data(tmp_path, capsys):
    original = onnx.load(MODELS / "resnet.ts.onnx")
    source = tmp_path / "in" / "model.onnx"
    source.parent.mkdir()
    _save_external(onnx.load(MODELS / "resnet.ts.onnx"), source, "model.weights")
    before = {p.name: p.read_bytes() for p in source.parent.iterdir()}
    out = tmp_path / "out" / "pruned.onnx"
    out.parent.mkdir()
    assert main([str(source), "-o", str(out), "--ratio", "0.5"]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["pruned.onnx", "pruned.onnx.data"]
    assert out.stat().st_size < 50_000  # the weights are in the data file
    pruned = onnx.load(str(out))
    onnx.checker.check_model(str(out), full_check=True)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    assert run(pruned, {"input": x})[0].shape == run(original, {"input": x})[0].shape
    assert {p.name: p.read_bytes() for p in source.parent.iterdir()} == before


def test_an_external_data_model_pruned_below_the_size_that_goes_out_is_saved_whole(tmp_path, capsys):
    # conv2's weight (1,152 bytes) is stored outside; pruned to half it is 576, under the 1,024 that go out.
    source = tmp_path / "in" / "model.onnx"
    source.parent.mkdir()
    _save_external(_chain(), source, "weights.bin")
    out = tmp_path / "out" / "pruned.onnx"
    out.parent.mkdir()
    assert main([str(source), "-o", str(out), "--ratio", "0.5", "--round-to", "1"]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["pruned.onnx"]
    onnx.checker.check_model(str(out), full_check=True)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert run(onnx.load(str(out)), {"x": x})[0].shape == (2, 4, 8, 8)


def test_an_external_data_output_is_replaced_from_its_own_folder(tmp_path, capsys, monkeypatch):
    # onnx refuses to save external data whose file exists relative to the working directory: a
    # pipeline rerunning in the output's folder with --force got an internal error (exit 3).
    source = tmp_path / "in" / "model.onnx"
    source.parent.mkdir()
    _save_external(onnx.load(MODELS / "resnet.ts.onnx"), source, "model.weights")
    monkeypatch.chdir(tmp_path)
    old_mask = os.umask(0o022)
    try:
        for ratio in ("0.3", "0.5"):
            assert main([str(source), "-o", "pruned.onnx", "--ratio", ratio, "--force", "--no-latency", "-q"]) == 0
    finally:
        os.umask(old_mask)
    written = [tmp_path / "pruned.onnx", tmp_path / "pruned.onnx.data"]
    assert [stat.S_IMODE(p.stat().st_mode) for p in written] == [0o644, 0o644]  # not private like mkstemp's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "pruned.onnx", "pruned.onnx.data"]
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    assert run(onnx.load(str(written[0])), {"input": x})[0].shape == (2, 10)


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/hostname", "sub/../../outside.bin"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path, capsys, location):
    folder = tmp_path / "models"
    folder.mkdir()
    path = folder / "model.onnx"
    _save_external(_chain(), path, "weights.bin")
    model = onnx.load(str(path), load_external_data=False)
    for init in model.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(model, str(path))
    (tmp_path / "outside.bin").write_bytes((folder / "weights.bin").read_bytes())
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert "points outside its folder" in err and len(err.strip().splitlines()) == 1
    assert not (folder / "model.pruned.onnx").exists()


def test_missing_external_data_file_gets_status_2(tmp_path, capsys):
    path = tmp_path / "model.onnx"
    _save_external(_chain(), path, "weights.bin")
    (tmp_path / "weights.bin").unlink()
    assert main([str(path)]) == 2
    assert "external data file 'weights.bin' is missing" in capsys.readouterr().err


def _calibration(inputs: dict[str, list], samples: int = 32) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    return [{name: rng.normal(size=[8, *shape[1:]]).astype(np.float32) for name, shape in inputs.items()}
            for _ in range(samples // 8)]


@pytest.mark.parametrize("opset", [11, 13, 18, 21])
def test_calibrated_compensated_pruning_on_old_and_new_opsets(opset):
    # Reductions take axes as an attribute before opset 13 (18 for most), as an input after.
    model = _chain(opset)
    model.ir_version = {21: 10}.get(opset, model.ir_version)
    result = onnxprune.prune(model, ratio=0.5, round_to=1, importance="apoz", calib=_calibration(X))
    assert result.report["compensation"] and result.pruned.params < result.original.params
    plain = onnxprune.prune(model, ratio=0.5, round_to=1, importance="apoz", calib=_calibration(X), compensate=False)
    assert max(o.relative_l2 for o in result.evaluation.outputs) <= max(o.relative_l2 for o in plain.evaluation.outputs)


def test_calibrated_compensation_keeps_float16_storage():
    model = _float16_chain()
    batches = [{k: v.astype(np.float16) for k, v in b.items()} for b in _calibration(X)]
    result = onnxprune.prune(model, ratio=0.5, round_to=1, importance="redundancy", calib=batches)
    assert {i.data_type for i in result.model.graph.initializer} == {TensorProto.FLOAT16}
    assert result.report["compensation"]
    feeds = {"x": batches[0]["x"]}
    assert np.isfinite(run(result.model, feeds)[0]).all()


def test_calibration_for_a_model_with_several_inputs(tmp_path):
    a, ia = conv("ca", "x1", "a", 3, 8, seed=1)
    b, ib = conv("cb", "x2", "b", 3, 8, seed=2)
    head, ih = conv("head", "r", "y", 8, 2, seed=3)
    nodes = [a, b, helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Relu", ["s"], ["r"]), head]
    inputs = {"x1": ["N", 3, 8, 8], "x2": ["N", 3, 8, 8]}
    model = make_model(nodes, inputs, ["y"], ia + ib + ih)
    path, calib = tmp_path / "m.onnx", tmp_path / "calib.npz"
    onnx.save(model, path)
    rng = np.random.default_rng(0)
    np.savez(calib, x1=rng.normal(size=(40, 3, 8, 8)).astype(np.float32),
             x2=rng.normal(size=(40, 3, 8, 8)).astype(np.float32))
    out = tmp_path / "o.onnx"
    assert main([str(path), "-o", str(out), "--calib", str(calib), "--ratio", "0.5", "--round-to", "1",
                 "--importance", "wanda", "--no-latency", "-q"]) == 0
    pruned = onnx.load(out)
    assert [i.name for i in pruned.graph.input] == ["x1", "x2"]


def test_calibrated_compensation_writes_bfloat16_stored_weights_back_in_bfloat16():
    model = _bfloat16_chain()
    options = {"ratio": 0.5, "round_to": 1, "importance": "fluctuation", "calib": _calibration(X)}
    result = onnxprune.prune(model, **options)
    assert {i.data_type for i in result.model.graph.initializer} == {TensorProto.BFLOAT16}
    assert result.report["compensation"]
    plain = onnxprune.prune(model, compensate=False, **options)
    assert max(o.relative_l2 for o in result.evaluation.outputs) <= max(o.relative_l2 for o in plain.evaluation.outputs)


@pytest.mark.parametrize("original, pruned, slower", [
    (0.012, 0.013, False),  # a microsecond on a tiny model is noise
    (1.00, 1.04, False),  # so is 4% of a larger one
    (1.00, 1.10, True), (0.012, 0.030, True)])
def test_a_pruned_model_counts_as_slower_only_beyond_measurement_noise(original, pruned, slower):
    comparison = LatencyComparison(LatencyStats(original, original), LatencyStats(pruned, pruned), 50, 1, 1)
    assert _slower(comparison) == slower


def test_the_slower_error_says_what_to_do():
    comparison = LatencyComparison(LatencyStats(0.034, 0.034), LatencyStats(0.048, 0.048), 50, 1, 1)
    assert slower_message(comparison).endswith("(0.048 ms vs 0.034 ms); nothing was written; --no-latency writes it anyway")
    # A model whose Attention the transformer optimizer fused runs slower split: the way around is named.
    message = slower_message(comparison, ("Attention", "EmbedLayerNormalization"))
    assert "its Attention and EmbedLayerNormalization were split" in message
    assert "optimize the pruned one, or pass --no-latency" in message


def _mvn_model() -> onnx.ModelProto:
    """x -> MeanVarianceNormalization -> y at opset 13, which ONNX 1.23's full checker fails (in MVN's
    own function body) and ONNX Runtime runs."""
    graph = helper.make_graph([helper.make_node("MeanVarianceNormalization", ["x"], ["y"], name="mvn")], "mvn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_a_checker_error_the_original_has_too_is_left_to_the_run_and_a_new_one_is_refused():
    from onnxprune.errors import PrunedModelError
    from onnxprune.validate import check_pruned, reference_run

    mvn = _mvn_model()
    with pytest.raises(onnx.shape_inference.InferenceError):
        onnx.checker.check_model(mvn, full_check=True)
    same = reference_run(mvn)
    assert same.checker_error is not None
    assert check_pruned(mvn.SerializeToString(), same).outputs[0].cosine > 0.9999
    identity = make_model([helper.make_node("Identity", ["x"], ["y"])], X, ["y"], [])
    clean = reference_run(identity)
    assert clean.checker_error is None and check_pruned(identity.SerializeToString(), clean).samples > 0
    with pytest.raises(PrunedModelError, match="fails the ONNX checker.*MeanVarianceNormalization"):
        check_pruned(mvn.SerializeToString(), clean)


def test_an_op_onnx_has_no_schema_of_is_left_to_the_run_but_a_standard_op_at_a_wrong_opset_is_refused():
    from onnxprune.errors import PrunedModelError
    from onnxprune.validate import check_pruned, reference_run

    def model(op: str, opset: int, **attrs) -> onnx.ModelProto:
        graph = helper.make_graph([helper.make_node(op, ["x", *(["k"] if op == "Trilu" else ["g"])], ["y"], **attrs)], "m",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 4])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 4])],
                                  [numpy_helper.from_array(np.ones(4, np.float32), "g"),
                                   numpy_helper.from_array(np.array(0, np.int64), "k")])
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        proto.ir_version = 8
        return proto

    # ONNX Runtime registers SimplifiedLayerNormalization (an RMS norm) in ONNX's own domain.
    rms = model("SimplifiedLayerNormalization", 17, axis=-1, epsilon=1e-5)
    clean = reference_run(make_model([helper.make_node("Identity", ["x"], ["y"])], {"x": ["N", 4, 4]}, ["y"], []))
    assert check_pruned(rms.SerializeToString(), clean).samples > 0
    with pytest.raises(PrunedModelError, match="No Op registered for Trilu"):  # Trilu came in opset 14
        check_pruned(model("Trilu", 13).SerializeToString(), clean)


def test_a_channel_rule_that_fails_keeps_its_nodes_channels_and_the_rest_prunes(monkeypatch):
    from onnxprune.rules.elementwise import UnaryRule

    def broken(self, node, ctx):  # declares the output's channels, then fails
        traced(self, node, ctx)
        raise KeyError("a bug")

    traced = UnaryRule.analyse
    monkeypatch.setattr(UnaryRule, "analyse", broken)
    first, inits1 = conv("conv1", "x", "a", 3, 8, seed=1)
    mid, inits2 = conv("conv2", "a", "b", 8, 8, seed=2)
    last, inits3 = conv("conv3", "r", "y", 8, 4, seed=3)
    model = make_model([first, mid, helper.make_node("Relu", ["b"], ["r"], name="relu"), last], X, ["y"],
                       inits1 + inits2 + inits3)
    monkeypatch.delenv("ONNXPRUNE_DEBUG", raising=False)
    result = onnxprune.prune(model, ratio=0.5, round_to=1)
    reasons = {m["tensor"]: g["pinned_reason"] for g in result.report["groups"] for m in g["members"]}
    assert "channel rule for 'Relu' failed (KeyError" in reasons["b"]
    assert reasons["a"] is None and result.pruned.macs < result.original.macs  # conv1's channels still go
    assert_matches_masked(model, result.model, result.report)
    monkeypatch.setenv("ONNXPRUNE_DEBUG", "1")
    with pytest.raises(KeyError):
        onnxprune.prune(model, ratio=0.5, round_to=1)


def test_a_stale_value_info_does_not_change_an_outputs_declared_type():
    # onnxconverter-common's float16 conversion with keep_io_types casts the output back to float32 but leaves
    # a value info of float16 for it: the graph rebuilt from the model declared a float16 output, which
    # ONNX Runtime refuses.
    nodes = [helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16),
             helper.make_node("Conv", ["x16", "w1"], ["a"], name="conv1"), helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y16"], name="conv2"),
             helper.make_node("Cast", ["y16"], ["y"], to=TensorProto.FLOAT)]
    inits = [numpy_helper.from_array(np.random.default_rng(i).standard_normal(shape).astype(np.float16), name)
             for i, (name, shape) in enumerate((("w1", (8, 3, 3, 3)), ("w2", (4, 8, 1, 1))))]
    graph = helper.make_graph(nodes, "stale", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 6, 6])], inits,
                              value_info=[helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["N", 4, 6, 6])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    rebuilt = export_graph(import_graph(model), model)
    assert rebuilt.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    result = onnxprune.prune(model, ratio=0.5, round_to=1)
    assert_matches_masked(model, result.model, result.report, tol=1e-2)  # float16 arithmetic
    assert result.model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT


def test_a_session_of_a_proto_takes_its_large_weights_as_arrays_and_leaves_the_proto_as_it_is():
    # The weights of a proto go to ONNX Runtime beside the serialized model (a sensitivity scan's
    # candidates): the same outputs as from the serialized model, with float16 and int64 weights too, and
    # the proto is left byte for byte as it was. An initializer no node reads stays in the model: ONNX Runtime
    # drops it before it would take its array.
    rng = np.random.default_rng(16)
    w1 = rng.normal(size=(64, 32, 3, 3)).astype(np.float32)  # 73 KB: goes beside
    w2 = rng.normal(size=(8, 64, 1, 1)).astype(np.float16)  # 1 KB: stays in the model
    table = rng.integers(0, 8, size=(20000,)).astype(np.int64)  # 160 KB
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1]),
             helper.make_node("Cast", ["h"], ["h16"], to=TensorProto.FLOAT16),
             helper.make_node("Conv", ["h16", "w2"], ["y16"]),
             helper.make_node("Cast", ["y16"], ["y"], to=TensorProto.FLOAT),
             helper.make_node("Gather", ["table", "i"], ["picked"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32, 8, 8]),
                                           helper.make_tensor_value_info("i", TensorProto.INT64, [5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("picked", TensorProto.INT64, None)],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
                               numpy_helper.from_array(table, "table"),
                               numpy_helper.from_array(w1, "unused")])  # (ONNX Runtime drops it)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    before = model.SerializeToString()
    feeds = {"x": rng.normal(size=(2, 32, 8, 8)).astype(np.float32), "i": np.array([0, 5, 19999, 7, 3])}
    apart = validate.weights_apart(model)
    skeleton, names, arrays = apart.skeleton, apart.names, apart.arrays
    assert names == ["w1", "table"] and len(skeleton.SerializeToString()) < 2000 + w1.nbytes
    assert abs(apart.size - len(before)) <= 0.001 * len(before)  # (the references replace the raw data)
    np.testing.assert_array_equal(arrays[0], w1)
    options = validate.ort.SessionOptions()
    options.add_external_initializers(names, [validate.ort.OrtValue.ortvalue_from_numpy(a) for a in arrays])
    direct = validate.ort.InferenceSession(skeleton.SerializeToString(), options, providers=["CPUExecutionProvider"])
    beside = validate.session(model, lean=True).run(None, feeds)
    assert model.SerializeToString() == before
    serialized = validate.session(before, lean=True).run(None, feeds)
    plain = validate.ort.InferenceSession(before, validate.ort.SessionOptions(), providers=["CPUExecutionProvider"])
    for a, b, c, d in zip(beside, serialized, direct.run(None, feeds), plain.run(None, feeds)):
        np.testing.assert_array_equal(a, b)  # (lean sessions, no graph optimisations)
        np.testing.assert_array_equal(c, d)  # (the default optimisations)
    np.testing.assert_array_equal(beside[1], table[feeds["i"]])
    del model.graph.initializer[0]  # w1: what is left is small or unread, and serialized as it is, uncopied
    del model.graph.initializer[1]  # table
    assert validate.weights_apart(model).skeleton is model
