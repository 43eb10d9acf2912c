"""Calibration data from .npz/.npy files, image folders or Python iterables, checked against the model's inputs.

Every source becomes one array per model input (samples first) plus optional integer labels; a seeded,
order-keeping subsample is then split into calibration and held-out parts and cut into batches.

Sources:
    .npz: one array per model input, keyed by input name, plus an optional ``labels`` array; a one-input
        model may also use a single array under any key.
    .npy: one array, for a one-input model.
    folder: images (jpg, jpeg, png, bmp, webp) decoded with Pillow, for a model with one 4-D input. Images
        directly in the folder have no labels; a folder of class subfolders (the ImageFolder convention)
        labels each image with the index of its subfolder in sorted name order (every non-hidden subfolder
        counts, empty ones too, so indices follow the names). Unreadable images are skipped and counted.
    iterable: batches as ``{input_name: array}`` dicts, labels optionally under ``labels``.
    array: from Python, one array (samples first), for a one-input model, like an .npy file.

Array data is used as given (no normalisation): it is cast to the input's dtype when that cannot lose
the kind of value (integers or floats to floats, narrower integers to integers), and an array missing
exactly one size-1 dim of the model input, right after the sample dim or last (e.g. [N, 28, 28] for
[N, 1, 28, 28]), gets that dim added.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from onnxprune.errors import InputError
from onnxprune.validate import _NUMPY_TYPES, EvalData, shape_text

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
LABELS = "labels"
_TYPES = {**_NUMPY_TYPES, "tensor(int16)": np.int16, "tensor(uint16)": np.uint16, "tensor(uint32)": np.uint32,
          "tensor(uint64)": np.uint64}


@dataclass(frozen=True)
class InputSpec:
    """One model input: name, shape (ints, or None for symbolic dims) and numpy dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype


def input_specs(sess: ort.InferenceSession) -> list[InputSpec]:
    """The inputs of an ONNX Runtime session as InputSpecs.

    Raises:
        InputError: an input has an element type with no numpy equivalent.
    """
    specs = []
    for arg in sess.get_inputs():
        if arg.type not in _TYPES:
            raise InputError(f"model input '{arg.name}' has type {arg.type}, which calibration data cannot feed")
        shape = tuple(d if isinstance(d, int) and d > 0 else None for d in (arg.shape or []))
        specs.append(InputSpec(arg.name, shape, np.dtype(_TYPES[arg.type])))
    return specs


@dataclass(frozen=True)
class ImageOptions:
    """Preprocessing of image folders: resize, centre crop, scale, normalise, channel order and layout.

    Pixels become ``(value * scale - mean) / std`` per channel (mean and std broadcast when one value).
    Images are converted to grayscale when the model input has 1 channel, else to RGB (or BGR).

    Attributes:
        size: the shorter side after resizing (default: the larger crop side).
        crop: centre crop to crop x crop (default: the model input's height and width, which must be static).
        layout: "NCHW", "NHWC", or "AUTO" (the default): NHWC where the model input's last axis has 1 or 3
            channels and its second does not (Keras models through tf2onnx), else NCHW.
        channel_order: "RGB" or "BGR".
    """

    size: int | None = None
    crop: int | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = 1 / 255
    layout: str = "AUTO"
    channel_order: str = "RGB"

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in np.atleast_1d(self.mean)))
        object.__setattr__(self, "std", tuple(float(s) for s in np.atleast_1d(self.std)))
        object.__setattr__(self, "layout", str(self.layout).upper())
        object.__setattr__(self, "channel_order", str(self.channel_order).upper())
        if self.layout not in ("AUTO", "NCHW", "NHWC"):
            raise InputError(f"image layout must be NCHW, NHWC or auto, got '{self.layout}'")
        if self.channel_order not in ("RGB", "BGR"):
            raise InputError(f"image channel order must be RGB or BGR, got '{self.channel_order}'")
        for name, value in (("size", self.size), ("crop", self.crop)):
            if value is not None and (int(value) != value or value < 1):
                raise InputError(f"image {name} must be a positive whole number of pixels, got {value}")
        if not self.mean or not self.std:
            raise InputError("image mean and std need at least one value each")
        if not all(np.isfinite(self.mean)) or not all(np.isfinite(s) and s != 0 for s in self.std):
            raise InputError(f"image mean must be finite and std finite and non-zero, got mean {self.mean}, std {self.std}")
        if not (np.isfinite(self.scale) and self.scale != 0):
            raise InputError(f"image scale must be a finite non-zero number, got {self.scale}")


@dataclass
class CalibrationData:
    """Calibration batches, held-out batches the calibration never saw, and the count of skipped images."""

    calibration: EvalData
    held_out: EvalData
    skipped: int = 0


@dataclass
class _Loaded:
    """A source read into one array per input (samples first), before subsampling and splitting."""

    arrays: dict[str, np.ndarray]
    labels: np.ndarray | None
    what: str  # e.g. "calib.npz", "image folder imgs (10 classes)"
    total: int  # samples in the source (before the cap)
    skipped: int = 0


def load_calibration(source: str | os.PathLike | np.ndarray | Iterable[dict[str, np.ndarray]], inputs: list[InputSpec], *,
                     samples: int | None = None, batch: int = 16, held_out: float = 0.2,
                     images: ImageOptions | None = None, seed: int = 0) -> CalibrationData:
    """Load calibration data and split it into calibration and held-out batches.

    Args:
        source: an .npz or .npy file, a folder of images, an iterable of ``{input_name: array}`` batches,
            or (for a one-input model) one array, samples first.
        inputs: the model's inputs (see ``input_specs``).
        samples: use at most this many samples, chosen with ``seed`` and kept in source order; an iterable
            is read only until it has given this many (its first ones).
        batch: samples per batch (a static batch dim of the model wins; the last batch may be smaller
            unless the batch dim is static, in which case incomplete batches are dropped).
        held_out: the fraction held out for fidelity and accuracy checks; at least one sample each when
            there are two or more, and with a single sample it is used for both.
        images: preprocessing for image folders (default ``ImageOptions()``).
        seed: seeds the subsample and the held-out split.

    Raises:
        InputError: the source is missing, unreadable or does not match the model's inputs.
    """
    if not inputs:
        raise InputError("the model has no inputs to feed calibration data to")
    if samples is not None and (int(samples) != samples or samples < 1):
        raise InputError(f"--calib-samples must be a positive whole number, got {samples}")
    if int(batch) != batch or batch < 1:
        raise InputError(f"--calib-batch must be a positive whole number, got {batch}")
    if not 0 < held_out < 1:
        raise InputError(f"--held-out must be a fraction between 0 and 1 (exclusive), got {held_out}")
    rng = np.random.default_rng(seed)
    if isinstance(source, (str, os.PathLike)):
        loaded = _load_path(Path(source), inputs, samples, images or ImageOptions(), rng)
    elif isinstance(source, np.ndarray):
        if len(inputs) > 1:
            raise InputError(f"one calibration array can feed only a one-input model; the model's inputs are "
                             f"{_names([s.name for s in inputs])}: give a dict of input name -> array")
        loaded = _check_arrays({inputs[0].name: source}, None, inputs, "the calibration array", samples, rng)
    elif isinstance(source, Mapping):
        loaded = _load_batches([source], inputs, samples)
    elif isinstance(source, Iterable):
        loaded = _load_batches(source, inputs, samples)
    else:
        raise InputError(f"calibration data must be a file, a folder or batches of arrays, got {type(source).__name__}")
    loaded.arrays = {k: np.ascontiguousarray(v) for k, v in loaded.arrays.items()}
    return _split(loaded, inputs, batch, held_out, rng)


def _split(loaded: _Loaded, inputs: list[InputSpec], batch: int, held_out: float,
           rng: np.random.Generator) -> CalibrationData:
    count = len(next(iter(loaded.arrays.values())))
    static = next((s.shape[0] for s in inputs if s.shape and s.shape[0] is not None), None)
    size = static or batch
    used = f"{count} of {loaded.total}" if count < loaded.total else f"{count}"
    skipped = f", {loaded.skipped} unreadable image{'s' if loaded.skipped != 1 else ''} skipped" if loaded.skipped else ""
    if count == 1:
        if static not in (None, 1):
            raise InputError(f"the model's batch dim is fixed at {static}; give at least {2 * static} calibration samples")
        data = _evaldata(loaded, np.arange(1), size,
                         f"1 sample from {loaded.what}, used for both calibration and held-out checks "
                         f"(too few to hold any out){skipped}")
        return CalibrationData(data, data, loaded.skipped)
    n_held = min(max(int(round(count * held_out)), 1), count - 1)
    chosen = np.zeros(count, bool)
    chosen[rng.choice(count, n_held, replace=False)] = True
    parts = np.flatnonzero(~chosen), np.flatnonzero(chosen)
    if static and static > 1:
        if min(len(p) for p in parts) < static:
            raise InputError(f"the model's batch dim is fixed at {static}: calibration and held-out parts need at least "
                             f"{static} samples each, got {len(parts[0])} and {len(parts[1])}; give more samples or "
                             f"change --held-out")
        parts = tuple(p[: len(p) // static * static] for p in parts)
    calibration = _evaldata(loaded, parts[0], size, f"{len(parts[0])} calibration samples from {loaded.what} "
                            f"({used} used, {len(parts[1])} held out){skipped}")
    held = _evaldata(loaded, parts[1], size, f"{len(parts[1])} held-out samples from {loaded.what} "
                     f"({used} used, {len(parts[0])} for calibration){skipped}")
    return CalibrationData(calibration, held, loaded.skipped)


def _evaldata(loaded: _Loaded, indices: np.ndarray, size: int, description: str) -> EvalData:
    chosen = {k: v[indices] for k, v in loaded.arrays.items()}  # one copy, its batches views back to back
    batches = [{k: v[i:i + size] for k, v in chosen.items()} for i in range(0, len(indices), size)]
    labels = loaded.labels[indices] if loaded.labels is not None else None
    return EvalData(batches, labels, description)


# ---------------------------------------------------------------- arrays: .npz, .npy, iterables


def _load_path(path: Path, inputs: list[InputSpec], samples: int | None, options: ImageOptions,
               rng: np.random.Generator) -> _Loaded:
    if path.is_dir():
        return _load_images(path, inputs, samples, options, rng)
    if not path.exists():
        raise InputError(f"calibration data {path} does not exist; give an .npz or .npy file or a folder of images")
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".npy"):
        raise InputError(f"calibration data {path} has an unknown extension '{path.suffix}'; "
                         "give an .npz or .npy file or a folder of images")
    try:
        content = np.load(path, mmap_mode="r" if suffix == ".npy" else None, allow_pickle=False)
        if isinstance(content, np.ndarray):
            arrays = {path.name: content}
        else:
            with content:
                arrays = {key: content[key] for key in content.files}  # each member is read once
    except Exception as exc:  # numpy raises ValueError, OSError, zipfile errors, EOFError ...
        reason = str(exc).splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot read calibration data {path} ({reason}); save it with numpy.savez or numpy.save") from None
    if isinstance(content, np.ndarray) and len(inputs) != 1:
        raise InputError(f"{path} holds one array but the model has {len(inputs)} inputs ({_names(s.name for s in inputs)}); "
                         "use an .npz file with one array per input name")
    labels = _pop_labels(arrays, inputs)
    return _check_arrays(arrays, labels, inputs, str(path), samples, rng)


def _load_batches(source: Iterable, inputs: list[InputSpec], samples: int | None) -> _Loaded:
    parts: dict[str, list[np.ndarray]] = {}
    labels: list[np.ndarray] = []
    count = 0
    index = -1
    for index, item in enumerate(source):
        if not isinstance(item, Mapping):
            raise InputError(f"calibration batch {index} is a {type(item).__name__}; "
                             "each batch must be a dict of input name -> array")
        feeds = {str(k): np.asarray(v) for k, v in item.items()}
        label = _pop_labels(feeds, inputs)
        if index and (label is None) != (not labels):
            raise InputError(f"calibration batch {index} {'lacks' if label is None else 'has'} '{LABELS}' "
                             f"unlike the batches before it; give labels in every batch or in none")
        batch = _check_arrays(feeds, label, inputs, f"calibration batch {index}")
        if batch.labels is not None:
            labels.append(batch.labels)
        for k, v in batch.arrays.items():
            parts.setdefault(k, []).append(v)
        count += batch.total
        if samples is not None and count >= samples:
            break
    if index < 0:
        raise InputError("the calibration batches are empty; give at least one batch of arrays")
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    label_array = np.concatenate(labels) if labels else None
    if samples is not None and count > samples:
        arrays = {k: v[:samples] for k, v in arrays.items()}
        label_array = label_array[:samples] if label_array is not None else None
        count = samples
    return _Loaded(arrays, label_array, f"{index + 1} in-memory batch{'es' if index else ''}", count)


def _pop_labels(arrays: dict[str, np.ndarray], inputs: list[InputSpec]) -> np.ndarray | None:
    """Remove and return the labels array, unless the model has an input of that name."""
    return None if any(s.name == LABELS for s in inputs) else arrays.pop(LABELS, None)


def _check_arrays(arrays: dict[str, np.ndarray], labels: np.ndarray | None, inputs: list[InputSpec], where: str,
                  samples: int | None = None, rng: np.random.Generator | None = None) -> _Loaded:
    """Match arrays to inputs by name, check shapes and labels, keep a seeded subsample of ``samples`` (in order),
    then cast dtypes (after subsampling, so a memory-mapped .npy is read only where sampled)."""
    names = [s.name for s in inputs]
    if len(inputs) == 1 and len(arrays) == 1 and names[0] not in arrays:
        arrays = {names[0]: next(iter(arrays.values()))}
    missing = [n for n in names if n not in arrays]
    unexpected = [k for k in arrays if k not in names]
    if missing or unexpected:
        problems = [f"missing input{'s' if len(missing) > 1 else ''} {_names(missing)}" if missing else "",
                    f"unexpected key{'s' if len(unexpected) > 1 else ''} {_names(unexpected)}" if unexpected else ""]
        raise InputError(f"{where}: {'; '.join(p for p in problems if p)}; the model's inputs are {_names(names)} "
                         f"(plus optional '{LABELS}')")
    checked = {s.name: _check_shape(arrays[s.name], s, where) for s in inputs}
    counts = {k: len(v) for k, v in checked.items()}
    if len(set(counts.values())) > 1:
        raise InputError(f"{where}: inputs have different sample counts ({', '.join(f'{k}: {n}' for k, n in counts.items())}); "
                         "give the same number of samples for every input")
    count = next(iter(counts.values()))
    if count == 0:
        raise InputError(f"{where} has 0 samples; give at least one sample")
    labels = _check_labels(labels, count, where)
    if samples is not None and samples < count and rng is not None:
        keep = np.sort(rng.choice(count, samples, replace=False))
        checked = {k: v[keep] for k, v in checked.items()}
        labels = labels[keep] if labels is not None else None
    checked = {s.name: _cast(checked[s.name], s, where) for s in inputs}
    return _Loaded(checked, labels, where, count)


def _check_shape(array: np.ndarray, spec: InputSpec, where: str) -> np.ndarray:
    expected = shape_text(spec.shape)
    got = list(array.shape)
    if array.ndim == len(spec.shape) - 1 and array.ndim >= 1:
        for axis in (1, len(spec.shape) - 1):  # a missing size-1 channel dim: after the samples, or last
            if spec.shape[axis] == 1 and _fits(array.shape[:axis] + (1,) + array.shape[axis:], spec.shape):
                array = np.expand_dims(array, axis)
                break
    if array.ndim == 0 or not _fits(array.shape, spec.shape):
        raise InputError(f"{where}: input '{spec.name}' must have shape {expected} (samples first), got {got}")
    return array


def _fits(shape: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    return len(shape) == len(expected) and all(e is None or s == e for s, e in zip(shape[1:], expected[1:]))


def _cast(array: np.ndarray, spec: InputSpec, where: str) -> np.ndarray:
    source, target = array.dtype, spec.dtype
    if source == target:
        return array
    kinds = {"f": "biuf", "i": "biu", "u": "bu", "b": "b"}  # target kind -> source kinds that convert safely
    ok = source.kind in kinds.get(target.kind, "")
    if ok and target.kind in "iu" and array.size:
        info = np.iinfo(target)
        ok = bool(array.min() >= info.min and array.max() <= info.max)
    if not ok:
        raise InputError(f"{where}: input '{spec.name}' expects {target} data, got {source}, which cannot be converted "
                         f"without changing values; save the array as {target}")
    return array.astype(target)


def _check_labels(labels: np.ndarray | None, count: int, where: str) -> np.ndarray | None:
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iub":
        raise InputError(f"{where}: '{LABELS}' must be a 1-D array of integer class indices, "
                         f"got shape {list(labels.shape)} of {labels.dtype}")
    if len(labels) != count:
        raise InputError(f"{where}: '{LABELS}' has {len(labels)} entries but the inputs have {count} samples; "
                         "give one label per sample")
    return labels.astype(np.int64)


def _names(names: Iterable[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


# ---------------------------------------------------------------- image folders


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not p.name.startswith("."))


def _class_files(folder: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(root) / n for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS and not n.startswith(".")]
    return sorted(files)


def _load_images(folder: Path, inputs: list[InputSpec], samples: int | None, options: ImageOptions,
                 rng: np.random.Generator) -> _Loaded:
    from PIL import Image, ImageOps

    spec, channels, crop_hw, resize, layout = _image_geometry(inputs, options, folder)
    flat = _image_files(folder)
    classes = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    per_class = [_class_files(d) for d in classes]
    if flat and any(per_class):
        raise InputError(f"{folder} holds both images and class subfolders of images; put every image in a class "
                         "subfolder (one folder per class) or none")
    if flat:
        files, labels, what = flat, None, f"image folder {folder} ({layout})"
    elif any(per_class):
        files = [f for fs in per_class for f in fs]
        labels = np.concatenate([np.full(len(fs), i, np.int64) for i, fs in enumerate(per_class)])
        what = f"image folder {folder} ({layout}, {len(classes)} classes)"
    else:
        raise InputError(f"{folder} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) directly or in class subfolders")
    order = rng.permutation(len(files)) if samples is not None and samples < len(files) else range(len(files))
    wanted = len(files) if samples is None else min(samples, len(files))
    decoded: dict[int, np.ndarray] = {}
    skipped = 0
    for index in order:  # decode until ``wanted`` images are read; unreadable ones are replaced by the next
        if len(decoded) == wanted:
            break
        try:
            with Image.open(files[index]) as image:
                image = ImageOps.exif_transpose(image)
                image = image.convert("L" if channels == 1 else "RGB")
                decoded[index] = _preprocess(image, crop_hw, resize)
        except Exception:  # Pillow raises many types for corrupt or unsupported files
            skipped += 1
    if not decoded:
        raise InputError(f"none of the {skipped} images in {folder} could be read; check they are valid "
                         f"{', '.join(sorted(IMAGE_EXTENSIONS))} files")
    keep = sorted(decoded)
    pixels = np.stack([decoded[i] for i in keep]).astype(np.float32)  # N, H, W[, C]
    if pixels.ndim == 3:
        pixels = pixels[..., None]
    if options.channel_order == "BGR":
        pixels = pixels[..., ::-1]
    for name, values in (("mean", options.mean), ("std", options.std)):
        if len(values) not in (1, channels):
            raise InputError(f"--image-{name} has {len(values)} values but input '{spec.name}' has {channels} "
                             f"channel{'s' if channels > 1 else ''}; give 1 or {channels}")
    pixels = (pixels * np.float32(options.scale) - np.asarray(options.mean, np.float32)) / np.asarray(options.std, np.float32)
    if layout == "NCHW":
        pixels = pixels.transpose(0, 3, 1, 2)
    array = _image_dtype(pixels, spec, options)
    return _Loaded({spec.name: array}, labels[keep] if labels is not None else None, what, len(files), skipped)


def _image_geometry(inputs: list[InputSpec], options: ImageOptions,
                    folder: Path) -> tuple[InputSpec, int, tuple[int, int], int, str]:
    """The image input, its channel count, the crop (height, width), the resize of the shorter side and the
    layout (``options.layout``, or the one the input's shape shows)."""
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        shapes = ", ".join(f"'{s.name}' {shape_text(s.shape)}" for s in inputs)
        raise InputError(f"an image folder ({folder}) needs a model with exactly one 4-D image input, "
                         f"this one has {shapes}; give an .npz file with one array per input instead")
    spec = inputs[0]
    layout = options.layout
    if layout == "AUTO":
        layout = "NHWC" if spec.shape[3] in (1, 3) and spec.shape[1] not in (1, 3) else "NCHW"
    nchw = layout == "NCHW"
    c, h, w = (spec.shape[1], spec.shape[2], spec.shape[3]) if nchw else (spec.shape[3], spec.shape[1], spec.shape[2])
    if c not in (None, 1, 3):
        other = spec.shape[3] if nchw else spec.shape[1]
        hint = f"; it looks {'NHWC' if nchw else 'NCHW'}, so pass --image-layout {'NHWC' if nchw else 'NCHW'}" \
            if other in (1, 3) else ""
        raise InputError(f"input '{spec.name}' of shape {shape_text(spec.shape)} has {c} channels in {layout} "
                         f"layout; images give 1 (grayscale) or 3 (RGB){hint}")
    channels = c or 3
    if options.crop is not None:
        crop = (options.crop, options.crop)
        if (h is not None and h != options.crop) or (w is not None and w != options.crop):
            raise InputError(f"--image-crop {options.crop} does not match input '{spec.name}' of shape "
                             f"{shape_text(spec.shape)} ({layout}); use --image-crop {h if h is not None else w}")
    elif h is None or w is None:
        raise InputError(f"input '{spec.name}' of shape {shape_text(spec.shape)} has no fixed height and width; "
                         "pass --image-crop to choose the image size")
    else:
        crop = (h, w)
    resize = options.size if options.size is not None else max(crop)
    if resize < max(crop):
        raise InputError(f"--image-size {resize} is smaller than the crop {crop[0]}x{crop[1]}; "
                         f"use --image-size {max(crop)} or more")
    return spec, channels, crop, resize, layout


def _preprocess(image, crop: tuple[int, int], resize: int) -> np.ndarray:
    """Resize the shorter side to ``resize`` (bilinear) and centre-crop to ``crop``; uint8 H x W [x C]."""
    from PIL import Image

    width, height = image.size
    if min(width, height) != resize:
        if width <= height:
            size = (resize, int(resize * height / width))
        else:
            size = (int(resize * width / height), resize)
        image = image.resize(size, Image.Resampling.BILINEAR)
    width, height = image.size
    top = int(round((height - crop[0]) / 2.0))
    left = int(round((width - crop[1]) / 2.0))
    return np.asarray(image.crop((left, top, left + crop[1], top + crop[0])))


def _image_dtype(pixels: np.ndarray, spec: InputSpec, options: ImageOptions) -> np.ndarray:
    if spec.dtype.kind == "f":
        return pixels.astype(spec.dtype)
    raw = options.scale == 1 and set(options.mean) == {0.0} and set(options.std) == {1.0}
    if spec.dtype == np.uint8 and raw:
        return np.rint(pixels).astype(np.uint8)
    raise InputError(f"input '{spec.name}' expects {spec.dtype} data; images can feed float inputs, or uint8 inputs "
                     "with --image-scale 1 and no mean/std")


# ---------------------------------------------------------------- command line


def add_calibration_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the calibration data options (--calib, --calib-samples, ..., --image-*) to ``parser``."""
    group = parser.add_argument_group("calibration data")
    group.add_argument("--calib", metavar="PATH",
                       help="calibration data: an .npz (one array per input name, optional 'labels'), an .npy, "
                            "or a folder of images (class subfolders give labels)")
    group.add_argument("--calib-samples", type=int, metavar="N", help="use at most N samples (seeded, in file order)")
    group.add_argument("--calib-batch", type=int, default=16, metavar="N", help="samples per batch (default 16)")
    group.add_argument("--held-out", type=float, default=0.2, metavar="F",
                       help="fraction of samples held out for fidelity and accuracy (default 0.2)")
    group.add_argument("--image-size", type=int, metavar="N", help="resize images so the shorter side is N (default: the crop)")
    group.add_argument("--image-crop", type=int, metavar="N", help="centre-crop images to NxN (default: the model's input size)")
    group.add_argument("--image-mean", metavar="M[,M,M]", help="per-channel mean subtracted after scaling (default 0)")
    group.add_argument("--image-std", metavar="S[,S,S]", help="per-channel std divided by after the mean (default 1)")
    group.add_argument("--image-scale", type=float, default=1 / 255, metavar="F", help="pixel values are multiplied by F first (default 1/255)")
    group.add_argument("--image-layout", choices=["auto", "NCHW", "NHWC"], default="auto",
                       help="image input layout (default: NHWC where the model input's last axis has 1 or 3 channels "
                            "and its second does not, else NCHW)")
    group.add_argument("--image-order", choices=["RGB", "BGR"], default="RGB", help="channel order of colour images (default RGB)")


def image_options_from_args(args: argparse.Namespace) -> ImageOptions:
    """ImageOptions from the options ``add_calibration_arguments`` adds.

    Raises:
        InputError: --image-mean or --image-std is not a comma-separated list of numbers, or another option is invalid.
    """
    defaults = ImageOptions()
    mean = _floats(getattr(args, "image_mean", None), "--image-mean", defaults.mean)
    std = _floats(getattr(args, "image_std", None), "--image-std", defaults.std)
    scale = getattr(args, "image_scale", None)
    return ImageOptions(size=getattr(args, "image_size", None), crop=getattr(args, "image_crop", None), mean=mean, std=std,
                        scale=defaults.scale if scale is None else scale,
                        layout=getattr(args, "image_layout", None) or defaults.layout,
                        channel_order=getattr(args, "image_order", None) or defaults.channel_order)


def _floats(text: str | None, option: str, default: tuple[float, ...]) -> tuple[float, ...]:
    if text is None:
        return default
    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise InputError(f"{option} must be comma-separated numbers such as 0.485,0.456,0.406; got '{text}'") from None
    return values
