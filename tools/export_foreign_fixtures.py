"""Export the fixtures made by other exporters than PyTorch's: a Keras MobileNetV3-Small and a small Keras
vision transformer (``keras_vit``) through tf2onnx and a Paddle MobileNetV3-Small through paddle2onnx
(random weights, 10 classes, 32x32 images), and the
TorchScript exports of the gpt and vit_mha fixtures simplified by onnxsim (as deployment pipelines often do
before anything else), into ``models/`` with their entries in ``models/MANIFEST.json``. At their initial weights both MobileNetV3s' outputs
barely depend on the input (Keras' is 0.1 for every class and image): the BatchNorm scales and shifts are
drawn at random and the moving statistics set from one batch of random inputs, so that they do.

TensorFlow and Paddle do not install beside PyTorch; give each its own environment and run this script
with that environment's Python, once per exporter::

    python -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu tf2onnx onnx
    /tmp/tfenv/bin/python tools/export_foreign_fixtures.py tf2onnx
    python -m venv /tmp/pdenv && /tmp/pdenv/bin/pip install paddlepaddle paddle2onnx packaging onnx
    /tmp/pdenv/bin/python tools/export_foreign_fixtures.py paddle2onnx
    python -m venv --system-site-packages /tmp/simenv && /tmp/simenv/bin/pip install onnxsim
    /tmp/simenv/bin/python tools/export_foreign_fixtures.py onnxsim

Keras' model carries its input scaling (a Rescaling layer) and NHWC layout, so tf2onnx writes
Transposes around the convs, hard-swish as x * relu6(x + 3) / 6 and squeeze-excite through Reshapes;
Paddle's carries hardswish, hardsigmoid and its own naming. onnxsim turns each MatMul of a sequence into
Reshape -> Gemm -> Reshape, shares one shape computation among the Reshapes of q, k and v, and folds the
Unsqueeze after ``nn.MultiheadAttention``'s packed projection into its Reshape.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
SEED = 0


def lively_keras(model):
    """``model`` with random BatchNorm scales and shifts and moving statistics of one batch of random
    pixels (NHWC, [0, 255]): at Keras' initial weights the activations vanish and outputs do not depend on
    the input. Returns the model."""
    import tensorflow as tf

    rng = np.random.default_rng(SEED)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            if layer.scale:  # InceptionV3's have no scale
                layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape))
            if layer.center:
                layer.beta.assign(rng.uniform(-0.1, 0.3, layer.beta.shape))
            layer.momentum = 0.0  # the next training-mode batch sets the moving statistics
    shape = [64, *model.input_shape[1:]]
    model(rng.uniform(0, 255, shape).astype(np.float32), training=True)
    return model


def lively_paddle(model, size: int):
    """``model`` (NCHW images of ``size``) with random BatchNorm scales and shifts and moving statistics of
    one batch of random inputs, in eval mode; returns it."""
    import paddle

    rng = np.random.default_rng(SEED)
    for layer in model.sublayers():
        if isinstance(layer, (paddle.nn.BatchNorm2D, paddle.nn.BatchNorm)):
            layer.weight.set_value(rng.uniform(0.5, 1.5, layer.weight.shape).astype(np.float32))
            layer.bias.set_value(rng.uniform(-0.1, 0.3, layer.bias.shape).astype(np.float32))
            layer._momentum = 0.0  # the next training-mode batch sets the moving statistics
    model.train()
    with paddle.no_grad():
        model(paddle.to_tensor(rng.standard_normal((64, 3, size, size)).astype(np.float32)))
    model.eval()
    return model


def export_keras(path: Path) -> str:
    """The Keras MobileNetV3-Small through a SavedModel and tf2onnx; returns the versions used."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    import tf2onnx

    tf.keras.utils.set_random_seed(SEED)
    model = lively_keras(tf.keras.applications.MobileNetV3Small(weights=None, input_shape=(32, 32, 3), classes=10,
                                                                alpha=0.75))
    with tempfile.TemporaryDirectory() as folder:
        model.export(folder, verbose=False)
        subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", folder, "--opset", "13",
                        "--output", str(path)], check=True, capture_output=True)
    return f"tensorflow {tf.__version__}, tf2onnx {tf2onnx.__version__}"


def keras_vit(tf):
    """A small vision transformer in Keras: 8x8 patches of a 32x32 image, two encoder blocks of 4-head
    attention (``MultiHeadAttention``, whose projections tf2onnx writes as einsums of the heads merged
    with the batch) and a tanh-approximated GELU feed-forward, mean-pooled to 10 classes."""
    layers = tf.keras.layers
    inputs = layers.Input((32, 32, 3))
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.Reshape((16, 48))(layers.Conv2D(48, 8, strides=8)(x))
    for _ in range(2):
        h = layers.LayerNormalization(epsilon=1e-6)(x)
        x = layers.Add()([x, layers.MultiHeadAttention(num_heads=4, key_dim=12)(h, h)])
        h = layers.LayerNormalization(epsilon=1e-6)(x)
        h = layers.Dense(96, activation=lambda v: tf.keras.activations.gelu(v, approximate=True))(h)
        x = layers.Add()([x, layers.Dense(48)(h)])
    x = layers.GlobalAveragePooling1D()(layers.LayerNormalization(epsilon=1e-6)(x))
    return tf.keras.Model(inputs, layers.Dense(10)(x))


def export_keras_vit(path: Path) -> str:
    """``keras_vit`` through a SavedModel and tf2onnx; returns the versions used."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    import tf2onnx

    tf.keras.utils.set_random_seed(SEED)
    with tempfile.TemporaryDirectory() as folder:
        keras_vit(tf).export(folder, verbose=False)
        subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", folder, "--opset", "13",
                        "--output", str(path)], check=True, capture_output=True)
    return f"tensorflow {tf.__version__}, tf2onnx {tf2onnx.__version__}"


def export_paddle(path: Path) -> str:
    """Paddle's MobileNetV3-Small through paddle2onnx; returns the versions used."""
    import paddle
    import paddle2onnx
    from paddle.static import InputSpec

    paddle.seed(SEED)
    model = lively_paddle(paddle.vision.models.mobilenet_v3_small(scale=0.75, num_classes=10), 32)
    prefix = str(path).removesuffix(".onnx")
    paddle.onnx.export(model, prefix, input_spec=[InputSpec([None, 3, 32, 32], "float32", "x")], opset_version=13)
    return f"paddlepaddle {paddle.__version__}, paddle2onnx {paddle2onnx.__version__}"


def simplifier(arch: str):
    """A function writing the TorchScript fixture ``arch`` simplified by onnxsim to its path."""
    def simplify(path: Path) -> str:
        import onnxsim

        model, checked = onnxsim.simplify(onnx.load(MODELS / f"{arch}.ts.onnx"))
        if not checked:
            sys.exit(f"onnxsim could not check its simplification of {arch}.ts.onnx")
        onnx.save(model, path)
        return f"onnxsim {onnxsim.__version__} of {arch}.ts.onnx"
    return simplify


WITHOUT_BATCHNORM = {"vit_keras"}
EXPORTS = {
    "tf2onnx": [("mobilenetv3_keras", export_keras), ("vit_keras", export_keras_vit)],
    "paddle2onnx": [("mobilenetv3_paddle", export_paddle)],
    "onnxsim": [(arch, simplifier(arch)) for arch in ("gpt", "vit_mha")],
}


def _dims(value: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in EXPORTS:
        sys.exit(f"usage: python {sys.argv[0]} {{{'|'.join(EXPORTS)}}}")
    exporter = sys.argv[1]
    for arch, export in EXPORTS[exporter]:
        write(MODELS / f"{arch}.{exporter}.onnx", arch, exporter, export)


def write(path: Path, arch: str, exporter: str, export) -> None:
    """Export ``arch`` to ``path`` and enter it in the manifest."""
    versions = export(path)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    manifest_path = MODELS / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text())
    histogram: dict[str, int] = {}
    for node in model.graph.node:
        histogram[node.op_type] = histogram.get(node.op_type, 0) + 1
    manifest["files"][path.name] = {
        "arch": arch,
        "exporter": exporter,
        "generator": f"tools/export_foreign_fixtures.py ({versions})"
                     + ("" if exporter == "onnxsim" else ", random weights"
                        + ("" if arch in WITHOUT_BATCHNORM else ", BatchNorm statistics of random inputs") + f", seed {SEED}"),
        "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "file_bytes": path.stat().st_size,
        "inputs": [{"name": v.name, "shape": _dims(v)} for v in model.graph.input],
        "outputs": [{"name": v.name, "shape": _dims(v)} for v in model.graph.output],
        "op_histogram": dict(sorted(histogram.items())),
    }
    manifest["files"] = dict(sorted(manifest["files"].items()))
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {path} ({path.stat().st_size:,} bytes; {versions})")


if __name__ == "__main__":
    main()
