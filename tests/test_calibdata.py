"""Calibration data loading: .npz/.npy files, image folders and iterables, checked against real model inputs."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from onnxprune.calibdata import (
    CalibrationData,
    ImageOptions,
    InputSpec,
    add_calibration_arguments,
    image_options_from_args,
    input_specs,
    load_calibration,
)
from onnxprune.errors import InputError

MODELS = Path(__file__).resolve().parent.parent / "models"


@pytest.fixture(scope="module")
def mnist() -> ort.InferenceSession:
    return ort.InferenceSession(str(MODELS / "fashion_mnist.ts.onnx"), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def resnet() -> ort.InferenceSession:
    return ort.InferenceSession(str(MODELS / "resnet.ts.onnx"), providers=["CPUExecutionProvider"])


def _all(data: CalibrationData, name: str = "input") -> tuple[np.ndarray, np.ndarray]:
    """Calibration and held-out arrays of one input, concatenated over batches."""
    return (np.concatenate([b[name] for b in data.calibration.batches]),
            np.concatenate([b[name] for b in data.held_out.batches]))


def _image(path: Path, color: tuple[int, int, int] = (10, 20, 30), size: tuple[int, int] = (40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _gradient(path: Path, width: int = 40, height: int = 30) -> Path:
    """An image whose every pixel differs, so layouts and crops can be checked."""
    y, x = np.mgrid[:height, :width]
    pixels = np.stack([x * 6, y * 8, (x + y) * 3], -1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def test_input_specs(mnist, resnet):
    assert input_specs(mnist) == [InputSpec("input", (None, 1, 28, 28), np.dtype(np.float32))]
    assert input_specs(resnet)[0].shape == (None, 3, 32, 32)


def test_npz_keyed_by_input_name_with_labels(tmp_path, mnist):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 1, 28, 28)).astype(np.float32)
    labels = np.arange(10)
    np.savez(tmp_path / "calib.npz", input=x, labels=labels)
    data = load_calibration(tmp_path / "calib.npz", input_specs(mnist), batch=4, held_out=0.2)
    calib, held = _all(data)
    assert (len(calib), len(held)) == (8, 2)
    assert [len(b["input"]) for b in data.calibration.batches] == [4, 4]
    # order is kept and nothing is normalised: rows are the file's rows, labels travel with them
    for part in (data.calibration, data.held_out):
        rows = np.concatenate([b["input"] for b in part.batches])
        np.testing.assert_array_equal(rows, x[part.labels])
        assert list(part.labels) == sorted(part.labels)
    assert set(data.calibration.labels) | set(data.held_out.labels) == set(range(10))
    assert data.calibration.description.startswith("8 calibration samples from ")
    assert "2 held out" in data.calibration.description and "calib.npz" in data.held_out.description
    assert data.skipped == 0


def test_npz_single_array_any_key_adds_channel_and_casts(mnist):
    data = load_calibration(MODELS / "fashion_mnist_test.npz", input_specs(mnist), samples=50, batch=16)
    calib, held = _all(data)
    assert calib.shape[1:] == (1, 28, 28) and calib.dtype == np.float32
    assert len(calib) + len(held) == 50 and len(held) == 10
    source = np.load(MODELS / "fashion_mnist_test.npz")
    rows = _rows(held[:, 0], source["x"])  # held-out rows are file rows, in file order, with their own labels
    assert list(rows) == sorted(rows)
    np.testing.assert_array_equal(data.held_out.labels, source["labels"][rows])
    assert "50 of 2000 used" in data.calibration.description
    # the batches run in ONNX Runtime and the labels match the model's predictions well (real data)
    x = (calib / 255 - 0.2860) / 0.3530
    predicted = mnist.run(None, {"input": x.astype(np.float32)})[0].argmax(1)
    assert np.mean(predicted == data.calibration.labels) > 0.6


def _rows(found: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Index in ``source`` of each of ``found``'s rows."""
    flat = source.reshape(len(source), -1)
    return np.array([int(np.flatnonzero((flat == row.reshape(-1)).all(1))[0]) for row in found])


def test_npy_source(tmp_path, resnet):
    x = np.random.default_rng(1).standard_normal((5, 3, 32, 32))  # float64 -> float32 is accepted
    with open(tmp_path / "x.NPY", "wb") as f:  # extensions are matched case-insensitively
        np.save(f, x)
    data = load_calibration(tmp_path / "x.NPY", input_specs(resnet), batch=2)
    calib, held = _all(data)
    assert calib.dtype == np.float32 and (len(calib), len(held)) == (4, 1)
    assert data.calibration.labels is None
    out = resnet.run(None, data.calibration.batches[0])[0]
    assert out.shape[0] == 2


def test_batches_run_in_onnxruntime(tmp_path, mnist, resnet):
    np.savez(tmp_path / "m.npz", input=np.zeros((7, 28, 28), np.uint8))
    for batch in load_calibration(tmp_path / "m.npz", input_specs(mnist), batch=3).calibration.batches:
        assert mnist.run(None, batch)[0].shape == (len(batch["input"]), 10)
    for i in range(3):
        _gradient(tmp_path / "imgs" / f"{i}.png")
    data = load_calibration(tmp_path / "imgs", input_specs(resnet), held_out=0.34)
    for batch in data.calibration.batches + data.held_out.batches:
        assert resnet.run(None, batch)[0].shape[0] == len(batch["input"])


def test_image_folder_flat_and_classes(tmp_path, resnet):
    for i in range(4):
        _image(tmp_path / "flat" / f"img{i}.JPG", (i * 10, 0, 0))
    (tmp_path / "flat" / "notes.txt").write_text("not an image")
    data = load_calibration(tmp_path / "flat", input_specs(resnet), held_out=0.25)
    assert data.calibration.labels is None and data.held_out.labels is None
    calib, held = _all(data)
    assert calib.shape == (3, 3, 32, 32) and held.shape == (1, 3, 32, 32)
    assert "image folder" in data.calibration.description

    for name, count in (("cat", 2), ("dog", 3), ("emu", 1)):
        for i in range(count):
            _image(tmp_path / "classes" / name / f"{i}.png", ({"cat": 50, "dog": 100, "emu": 150}[name], 0, 0))
    (tmp_path / "classes" / "cat" / "broken.webp").write_bytes(b"RIFF")  # skipped; labels stay aligned
    data = load_calibration(tmp_path / "classes", input_specs(resnet), held_out=0.5, images=ImageOptions(scale=1))
    for part in (data.calibration, data.held_out):
        red = np.concatenate([b["input"] for b in part.batches])[:, 0, 0, 0]
        np.testing.assert_array_equal(part.labels, (red / 50 - 1).astype(int))  # label = sorted subfolder index
    assert sorted(np.concatenate([data.calibration.labels, data.held_out.labels])) == [0, 0, 1, 1, 1, 2]
    assert "3 classes" in data.calibration.description and data.skipped == 1


def test_layouts_orders_and_normalisation(tmp_path):
    _gradient(tmp_path / "imgs" / "a.png", 40, 30)
    _gradient(tmp_path / "imgs" / "b.png", 40, 30)
    nchw = [InputSpec("x", (None, 3, 30, 30), np.dtype(np.float32))]
    nhwc = [InputSpec("x", (None, 30, 30, 3), np.dtype(np.float32))]
    raw = ImageOptions(scale=1)
    a = np.concatenate(_all(load_calibration(tmp_path / "imgs", nchw, images=raw), "x"))
    b = np.concatenate(_all(load_calibration(tmp_path / "imgs", nhwc, images=ImageOptions(scale=1, layout="NHWC")), "x"))
    np.testing.assert_array_equal(a.transpose(0, 2, 3, 1), b)
    # Without a layout, the input's shape tells it: [N, 30, 30, 3] is NHWC, [N, 3, 30, 30] NCHW.
    auto = load_calibration(tmp_path / "imgs", nhwc, images=raw)
    np.testing.assert_array_equal(np.concatenate(_all(auto, "x")), b)
    assert "(NHWC)" in auto.calibration.description
    explicit = np.concatenate(_all(load_calibration(tmp_path / "imgs", nchw, images=ImageOptions(scale=1, layout="NCHW")), "x"))
    np.testing.assert_array_equal(explicit, a)
    # 30x40 crops 5 columns from each side: pixel (row 0, col 0) of the crop is (x=5, y=0) of the image
    np.testing.assert_array_equal(a[0, :, 0, 0], [5 * 6, 0, 5 * 3])
    bgr = np.concatenate(_all(load_calibration(tmp_path / "imgs", nchw, images=ImageOptions(scale=1, channel_order="BGR")), "x"))
    np.testing.assert_array_equal(bgr, a[:, ::-1])
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    normal = np.concatenate(_all(load_calibration(tmp_path / "imgs", nchw, images=ImageOptions(mean=mean, std=std)), "x"))
    np.testing.assert_allclose(normal[0, :, 0, 0], (np.array([30, 0, 15]) / 255 - mean) / std, rtol=1e-5)
    np.testing.assert_allclose(normal, (a / 255 - np.reshape(mean, (1, 3, 1, 1))) / np.reshape(std, (1, 3, 1, 1)), rtol=1e-5)


def test_resize_and_crop_options(tmp_path):
    _gradient(tmp_path / "imgs" / "a.png", 40, 30)
    spec = [InputSpec("x", (None, 3, None, None), np.dtype(np.float32))]
    with pytest.raises(InputError, match="--image-crop"):
        load_calibration(tmp_path / "imgs", spec)
    data = load_calibration(tmp_path / "imgs", spec, images=ImageOptions(crop=20), held_out=0.5)
    assert data.calibration.batches[0]["x"].shape == (1, 3, 20, 20)  # 1 sample: used for both
    assert data.held_out is data.calibration and "used for both" in data.calibration.description
    data = load_calibration(tmp_path / "imgs", spec, images=ImageOptions(crop=10, size=30, scale=1))
    # size 30 is the shorter side already: no resize, the crop is the centre 10x10 (x 15..24, y 10..19)
    np.testing.assert_array_equal(data.calibration.batches[0]["x"][0, 0, 0, :3], [90, 96, 102])
    with pytest.raises(InputError, match="--image-size 8 is smaller"):
        load_calibration(tmp_path / "imgs", spec, images=ImageOptions(crop=10, size=8))


def test_grayscale_model_and_uint8_images(tmp_path, mnist):
    for i in range(3):
        _image(tmp_path / "g" / f"{i}.bmp", (100, 100, 100), (28, 28))
    options = ImageOptions(mean=(0.2860,), std=(0.3530,))
    data = load_calibration(tmp_path / "g", input_specs(mnist), images=options)
    calib, _ = _all(data)
    assert calib.shape[1:] == (1, 28, 28)
    np.testing.assert_allclose(calib[0, 0, 0, 0], (100 / 255 - 0.2860) / 0.3530, rtol=1e-5)
    assert mnist.run(None, data.calibration.batches[0])[0].shape[1] == 10
    with pytest.raises(InputError, match="--image-mean has 3 values but input 'input' has 1 channel"):
        load_calibration(tmp_path / "g", input_specs(mnist), images=ImageOptions(mean=(0.1, 0.2, 0.3)))


def test_unreadable_images_skipped_and_counted(tmp_path, resnet):
    for i in range(3):
        _image(tmp_path / "imgs" / f"good{i}.png")
    (tmp_path / "imgs" / "bad.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "imgs" / "truncated.png").write_bytes(_image(tmp_path / "t.png").read_bytes()[:40])
    data = load_calibration(tmp_path / "imgs", input_specs(resnet))
    assert data.skipped == 2
    assert data.calibration.samples + data.held_out.samples == 3
    assert "2 unreadable images skipped" in data.calibration.description
    for name in ("good0.png", "good1.png", "good2.png"):
        (tmp_path / "imgs" / name).write_bytes(b"garbage")
    with pytest.raises(InputError, match="none of the 5 images"):
        load_calibration(tmp_path / "imgs", input_specs(resnet))


def test_image_folder_errors(tmp_path, resnet):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        load_calibration(tmp_path / "empty", input_specs(resnet))
    _image(tmp_path / "mixed" / "a.png")
    _image(tmp_path / "mixed" / "cls" / "b.png")
    with pytest.raises(InputError, match="both images and class subfolders"):
        load_calibration(tmp_path / "mixed", input_specs(resnet))
    two = [InputSpec("a", (None, 3, 32, 32), np.dtype(np.float32)), InputSpec("b", (None, 4), np.dtype(np.float32))]
    with pytest.raises(InputError, match="exactly one 4-D image input"):
        load_calibration(tmp_path / "mixed" / "cls", two)
    nhwc = [InputSpec("x", (None, 32, 32, 3), np.dtype(np.float32))]
    with pytest.raises(InputError, match="pass --image-layout NHWC"):
        load_calibration(tmp_path / "mixed" / "cls", nhwc, images=ImageOptions(layout="NCHW"))
    with pytest.raises(InputError, match="--image-crop 16 does not match input 'input'"):
        load_calibration(tmp_path / "mixed" / "cls", input_specs(resnet), images=ImageOptions(crop=16))


def test_wrong_names_shapes_dtypes(tmp_path, mnist):
    specs = input_specs(mnist)
    np.savez(tmp_path / "names.npz", image=np.zeros((4, 1, 28, 28), np.float32), extra=np.zeros((4, 3)))
    with pytest.raises(InputError) as error:
        load_calibration(tmp_path / "names.npz", specs)
    message = str(error.value)
    assert "missing input 'input'" in message and "'image', 'extra'" in message and "inputs are 'input'" in message
    assert "\n" not in message

    np.savez(tmp_path / "shape.npz", input=np.zeros((4, 3, 28, 28), np.float32))
    with pytest.raises(InputError, match=r"input 'input' must have shape \[N, 1, 28, 28\].*got \[4, 3, 28, 28\]"):
        load_calibration(tmp_path / "shape.npz", specs)
    np.save(tmp_path / "rank.npy", np.zeros((4, 28), np.float32))
    with pytest.raises(InputError, match=r"'input' must have shape \[N, 1, 28, 28\].*got \[4, 28\]"):
        load_calibration(tmp_path / "rank.npy", specs)

    np.save(tmp_path / "int.npy", np.zeros((4, 1, 28, 28), np.float32))
    with pytest.raises(InputError, match="input 'ids' expects int64 data, got float32"):
        load_calibration(tmp_path / "int.npy", [InputSpec("ids", (None, 1, 28, 28), np.dtype(np.int64))])
    np.save(tmp_path / "big.npy", np.full((2, 3), 300, np.int64))
    with pytest.raises(InputError, match="expects uint8 data, got int64"):
        load_calibration(tmp_path / "big.npy", [InputSpec("ids", (None, 3), np.dtype(np.uint8))])
    np.save(tmp_path / "small.npy", np.full((2, 3), 7, np.int64))
    cast = load_calibration(tmp_path / "small.npy", [InputSpec("ids", (None, 3), np.dtype(np.int32))])
    assert cast.calibration.batches[0]["ids"].dtype == np.int32
    # an input named 'labels' is fed, not taken for class labels
    np.savez(tmp_path / "named.npz", labels=np.ones((3, 2), np.float32))
    named = load_calibration(tmp_path / "named.npz", [InputSpec("labels", (None, 2), np.dtype(np.float32))])
    assert named.calibration.labels is None and "labels" in named.calibration.batches[0]


def test_file_and_value_errors(tmp_path, mnist):
    specs = input_specs(mnist)
    with pytest.raises(InputError, match="does not exist"):
        load_calibration(tmp_path / "nope.npz", specs)
    (tmp_path / "data.csv").write_text("1,2,3")
    with pytest.raises(InputError, match="unknown extension '.csv'"):
        load_calibration(tmp_path / "data.csv", specs)
    (tmp_path / "broken.npz").write_bytes(b"PK not a zip")
    with pytest.raises(InputError, match="cannot read calibration data"):
        load_calibration(tmp_path / "broken.npz", specs)
    np.savez(tmp_path / "empty.npz", input=np.zeros((0, 1, 28, 28), np.float32))
    with pytest.raises(InputError, match="0 samples"):
        load_calibration(tmp_path / "empty.npz", specs)
    np.savez(tmp_path / "labels.npz", input=np.zeros((4, 1, 28, 28), np.float32), labels=np.arange(3))
    with pytest.raises(InputError, match="'labels' has 3 entries but the inputs have 4 samples"):
        load_calibration(tmp_path / "labels.npz", specs)
    np.savez(tmp_path / "ok.npz", input=np.zeros((4, 1, 28, 28), np.float32))
    for kwargs in ({"samples": 0}, {"batch": 0}, {"held_out": 1.0}, {"held_out": 0}):
        with pytest.raises(InputError):
            load_calibration(tmp_path / "ok.npz", specs, **kwargs)
    two = [InputSpec("a", (None, 2), np.dtype(np.float32)), InputSpec("b", (None, 2), np.dtype(np.float32))]
    np.save(tmp_path / "one.npy", np.zeros((4, 2), np.float32))
    with pytest.raises(InputError, match="model has 2 inputs"):
        load_calibration(tmp_path / "one.npy", two)
    (tmp_path / "plain.npz").write_bytes((tmp_path / "one.npy").read_bytes())  # an .npy under an .npz name
    assert load_calibration(tmp_path / "plain.npz", [two[0]]).calibration.samples == 3
    np.savez(tmp_path / "counts.npz", a=np.zeros((4, 2), np.float32), b=np.zeros((3, 2), np.float32))
    with pytest.raises(InputError, match="different sample counts"):
        load_calibration(tmp_path / "counts.npz", two)


def test_samples_cap_and_held_out_split(tmp_path, mnist):
    x = np.arange(100, dtype=np.float32)[:, None, None, None] * np.ones((1, 1, 28, 28), np.float32)
    np.savez(tmp_path / "c.npz", input=x)
    specs = input_specs(mnist)
    for samples, held_out, expected in ((None, 0.2, (80, 20)), (30, 0.2, (24, 6)), (2, 0.01, (1, 1)),
                                        (10, 0.99, (1, 9)), (1, 0.5, (1, 1))):
        data = load_calibration(tmp_path / "c.npz", specs, samples=samples, held_out=held_out, batch=7)
        assert (data.calibration.samples, data.held_out.samples) == expected
        calib, held = _all(data)
        values = np.concatenate([calib[:, 0, 0, 0], held[:, 0, 0, 0]]) if samples != 1 else calib[:, 0, 0, 0]
        assert len(set(values)) == len(values)  # no sample in both parts
        assert list(calib[:, 0, 0, 0]) == sorted(calib[:, 0, 0, 0])  # file order kept
        assert all(len(b["input"]) <= 7 for b in data.calibration.batches)
    assert "30 of 100 used" in load_calibration(tmp_path / "c.npz", specs, samples=30).calibration.description


def test_static_batch_dim(tmp_path):
    specs = [InputSpec("x", (4, 3), np.dtype(np.float32))]
    np.save(tmp_path / "x.npy", np.zeros((21, 3), np.float32))
    data = load_calibration(tmp_path / "x.npy", specs, batch=16, held_out=0.25)
    assert all(len(b["x"]) == 4 for b in data.calibration.batches + data.held_out.batches)
    assert (data.calibration.samples, data.held_out.samples) == (16, 4)
    np.save(tmp_path / "few.npy", np.zeros((5, 3), np.float32))
    with pytest.raises(InputError, match="batch dim is fixed at 4"):
        load_calibration(tmp_path / "few.npy", specs)


def test_image_samples_cap_decodes_only_what_is_needed(tmp_path, resnet):
    for i in range(10):
        _image(tmp_path / "imgs" / f"{i:02d}.png", (i * 20, 0, 0))
    data = load_calibration(tmp_path / "imgs", input_specs(resnet), samples=4, images=ImageOptions(scale=1), seed=3)
    calib, held = _all(data)
    assert len(calib) + len(held) == 4
    assert "4 of 10 used" in data.calibration.description
    again = load_calibration(tmp_path / "imgs", input_specs(resnet), samples=4, images=ImageOptions(scale=1), seed=3)
    np.testing.assert_array_equal(_all(again)[0], calib)


def test_array_source_for_a_one_input_model(mnist):
    x = np.random.default_rng(3).standard_normal((30, 28, 28)).astype(np.float32)  # the channel dim is added
    data = load_calibration(x, input_specs(mnist), samples=20, batch=8)
    calib, held = _all(data)
    assert calib.shape[1:] == (1, 28, 28) and len(calib) + len(held) == 20 and data.calibration.labels is None
    assert len(set(_rows(np.concatenate([calib, held])[:, 0], x))) == 20  # 20 distinct samples of x
    assert mnist.run(None, data.calibration.batches[0])[0].shape == (8, 10)
    two = [InputSpec("a", (None, 4), np.dtype(np.float32)), InputSpec("b", (None, 4), np.dtype(np.float32))]
    with pytest.raises(InputError, match="only a one-input model.*'a', 'b'"):
        load_calibration(np.zeros((4, 4), np.float32), two)
    with pytest.raises(InputError, match=r"the calibration array: input 'input' must have shape \[N, 1, 28, 28\]"):
        load_calibration(np.zeros((4, 3, 28, 28), np.float32), input_specs(mnist))


def test_iterable_source(mnist):
    rng = np.random.default_rng(2)
    batches = [{"input": rng.standard_normal((3, 1, 28, 28)).astype(np.float32), "labels": np.array([i, i, i])}
               for i in range(4)]
    data = load_calibration(iter(batches), input_specs(mnist), batch=5)
    assert data.calibration.samples + data.held_out.samples == 12
    assert "labels" not in data.calibration.batches[0]
    assert sorted(np.concatenate([data.calibration.labels, data.held_out.labels])) == sorted([0, 1, 2, 3] * 3)
    assert "4 in-memory batches" in data.calibration.description
    # a stream is read only until the cap: its first samples
    capped = load_calibration((b for b in batches), input_specs(mnist), samples=4)
    assert sorted(np.concatenate([capped.calibration.labels, capped.held_out.labels])) == [0, 0, 0, 1]
    single = load_calibration({"input": np.zeros((2, 28, 28), np.float32)}, input_specs(mnist))
    assert single.calibration.batches[0]["input"].shape == (1, 1, 28, 28)
    with pytest.raises(InputError, match="calibration batch 1 lacks 'labels'"):
        load_calibration([batches[0], {"input": batches[1]["input"]}], input_specs(mnist))
    with pytest.raises(InputError, match="calibration batch 0 is a list"):
        load_calibration([[1, 2]], input_specs(mnist))
    with pytest.raises(InputError, match="batches are empty"):
        load_calibration([], input_specs(mnist))
    with pytest.raises(InputError, match=r"calibration batch 0: input 'input' must have shape \[N, 1, 28, 28\]"):
        load_calibration([{"input": np.zeros((2, 3, 28, 28), np.float32)}], input_specs(mnist))


def test_determinism(tmp_path, mnist):
    np.savez(tmp_path / "d.npz", input=np.random.default_rng(5).standard_normal((50, 1, 28, 28)).astype(np.float32))
    specs = input_specs(mnist)
    first = load_calibration(tmp_path / "d.npz", specs, samples=20, seed=7)
    second = load_calibration(tmp_path / "d.npz", specs, samples=20, seed=7)
    other = load_calibration(tmp_path / "d.npz", specs, samples=20, seed=8)
    for a, b in zip(_all(first), _all(second)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(_all(first)[0], _all(other)[0])


def test_command_line_options():
    parser = argparse.ArgumentParser()
    add_calibration_arguments(parser)
    args = parser.parse_args(["--calib", "x.npz", "--calib-samples", "64", "--held-out", "0.1", "--image-size", "36",
                              "--image-crop", "32", "--image-mean", "0.485,0.456,0.406", "--image-std", "0.5",
                              "--image-scale", "1", "--image-layout", "NHWC", "--image-order", "BGR"])
    assert (args.calib, args.calib_samples, args.calib_batch, args.held_out) == ("x.npz", 64, 16, 0.1)
    assert image_options_from_args(args) == ImageOptions(size=36, crop=32, mean=(0.485, 0.456, 0.406), std=(0.5,),
                                                         scale=1.0, layout="NHWC", channel_order="BGR")
    assert image_options_from_args(parser.parse_args([])) == ImageOptions()
    with pytest.raises(InputError, match="--image-mean must be comma-separated numbers"):
        image_options_from_args(parser.parse_args(["--image-mean", "0.5;0.4"]))
    with pytest.raises(InputError, match="std"):
        image_options_from_args(parser.parse_args(["--image-std", "0"]))
