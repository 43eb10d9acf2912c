"""Prune real exports of other frameworks' model zoos and check them with the masking oracle.

The README's "checked by hand" list of tf2onnx and paddle2onnx exports comes from here. Each framework
runs in an environment of its own (see ``export_foreign_fixtures.py`` for how to make them); the
check runs in onnxprune's own::

    /tmp/tfenv/bin/python tools/probe_exports.py export-keras /tmp/exports
    /tmp/pdenv/bin/python tools/probe_exports.py export-paddle /tmp/exports
    python tools/probe_exports.py check /tmp/exports

(each command takes names after the folder to do only those: ``export-keras /tmp/exports unet``, then
``check /tmp/exports keras_unet``).

Every model has random weights, with BatchNorm statistics of random inputs (see ``export_foreign_fixtures.py``:
otherwise their outputs barely depend on the input, and the oracle would check little); ``check`` prunes each at ``--ratio 0.5 --round-to 1`` and prints its MACs
before and after, whether the pruned model computes what the original computes with the removed channels'
consumer weights zeroed (within 1e-4), and why its pinned groups stay whole.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from export_foreign_fixtures import lively_keras, lively_paddle  # noqa: E402


def export_keras(folder: Path, names: list[str]) -> None:
    """Keras applications and small models of other layers through a SavedModel and tf2onnx (those in
    ``names`` only, where it is not empty)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    apps, layers = tf.keras.applications, tf.keras.layers
    models = {
        "mobilenetv2": lambda: apps.MobileNetV2(weights=None, input_shape=(64, 64, 3), alpha=0.5),
        "resnet50": lambda: apps.ResNet50(weights=None, input_shape=(64, 64, 3)),
        "efficientnetb0": lambda: apps.EfficientNetB0(weights=None, input_shape=(64, 64, 3)),
        "densenet121": lambda: apps.DenseNet121(weights=None, input_shape=(64, 64, 3)),
        "mobilenetv3small": lambda: apps.MobileNetV3Small(weights=None, input_shape=(64, 64, 3)),
        "inceptionv3": lambda: apps.InceptionV3(weights=None, input_shape=(75, 75, 3), classes=10),
        "xception": lambda: apps.Xception(weights=None, input_shape=(71, 71, 3), classes=10),
        "resnet50v2": lambda: apps.ResNet50V2(weights=None, input_shape=(64, 64, 3), classes=10),
        "mobilenet": lambda: apps.MobileNet(weights=None, input_shape=(64, 64, 3), classes=10, alpha=0.5),
        "efficientnetv2b0": lambda: apps.EfficientNetV2B0(weights=None, input_shape=(64, 64, 3), classes=10),
        "convnexttiny": lambda: apps.ConvNeXtTiny(weights=None, input_shape=(64, 64, 3), classes=10),
        "sequential_cnn": lambda: tf.keras.Sequential([
            layers.Input((28, 28, 1)), layers.Conv2D(16, 3, activation="relu"), layers.MaxPooling2D(),
            layers.Conv2D(32, 3, activation="relu"), layers.BatchNormalization(), layers.Flatten(),
            layers.Dense(64, activation="relu"), layers.Dropout(0.2), layers.Dense(10)]),
        "conv1d_lstm": lambda: tf.keras.Sequential([
            layers.Input((20, 8)), layers.Conv1D(16, 3, padding="same", activation="relu"),
            layers.LSTM(24, return_sequences=True), layers.GlobalAveragePooling1D(), layers.Dense(5)]),
    }
    models.update(keras_layer_models(tf))
    for name, build in models.items():
        if names and name not in names:
            continue
        with tempfile.TemporaryDirectory() as saved:
            lively_keras(build()).export(saved, verbose=False)
            done = subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", saved, "--opset", "13",
                                   "--output", str(folder / f"keras_{name}.onnx")], capture_output=True, text=True)
        print(f"keras_{name}: {'exported' if done.returncode == 0 else 'tf2onnx failed'}", flush=True)


def keras_layer_models(tf) -> dict:
    """Small functional models of the Keras layers that the applications do not use."""
    layers = tf.keras.layers

    def unet():  # SeparableConv2D, Conv2DTranspose, UpSampling2D, DepthwiseConv2D, skip Concatenates
        inputs = layers.Input((32, 32, 3))
        c1 = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
        c2 = layers.BatchNormalization()(layers.SeparableConv2D(32, 3, padding="same", activation="relu")(layers.MaxPooling2D()(c1)))
        bottom = layers.Conv2D(64, 3, padding="same", activation="relu")(layers.MaxPooling2D()(c2))
        u2 = layers.Concatenate()([layers.Conv2DTranspose(32, 2, strides=2, padding="same")(bottom), c2])
        u2 = layers.Conv2D(32, 3, padding="same", activation="relu")(u2)
        u1 = layers.DepthwiseConv2D(3, padding="same")(layers.Concatenate()([layers.UpSampling2D()(u2), c1]))
        return tf.keras.Model(inputs, layers.Conv2D(2, 1)(layers.Conv2D(16, 1, activation="relu")(u1)))

    def group_layer_norm():  # GroupNormalization, swish, LayerNormalization over the channels
        inputs = layers.Input((16, 16, 3))
        x = layers.Activation("swish")(layers.GroupNormalization(groups=8)(layers.Conv2D(32, 3, padding="same")(inputs)))
        x = layers.LayerNormalization(axis=-1)(layers.Conv2D(32, 3, padding="same")(x))
        x = layers.GlobalAveragePooling2D()(layers.Conv2D(16, 3, padding="same", activation="relu")(x))
        return tf.keras.Model(inputs, layers.Dense(5)(x))

    def squeeze_excite():  # GlobalAveragePooling2D(keepdims) -> 1x1 convs -> Multiply
        inputs = layers.Input((16, 16, 3))
        x = layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
        gate = layers.Conv2D(8, 1, activation="relu")(layers.GlobalAveragePooling2D(keepdims=True)(x))
        x = layers.Multiply()([x, layers.Conv2D(32, 1, activation="sigmoid")(gate)])
        x = layers.GlobalMaxPooling2D()(layers.Conv2D(16, 3, padding="same", activation="relu")(x))
        return tf.keras.Model(inputs, layers.Dense(5)(x))

    def bidirectional_lstm():  # zero initial states built per direction and concatenated
        inputs = layers.Input((20, 8))
        x = layers.Conv1D(16, 3, padding="same", activation="relu")(inputs)
        x = layers.Dense(10, activation="relu")(layers.Bidirectional(layers.LSTM(12, return_sequences=True))(x))
        return tf.keras.Model(inputs, layers.Dense(3)(layers.GlobalAveragePooling1D()(x)))

    def dot_product_attention():  # Attention()([q, v]): scores over the channels of q and v
        inputs = layers.Input((20, 8))
        q, v = layers.Dense(16)(inputs), layers.Dense(16)(inputs)
        x = layers.Dense(12, activation="relu")(layers.Concatenate()([q, layers.Attention()([q, v])]))
        return tf.keras.Model(inputs, layers.Dense(3)(layers.GlobalMaxPooling1D()(x)))

    return {"unet": unet, "group_layer_norm": group_layer_norm, "squeeze_excite": squeeze_excite,
            "bidirectional_lstm": bidirectional_lstm, "dot_product_attention": dot_product_attention}


def export_paddle(folder: Path, names: list[str]) -> None:
    """``paddle.vision`` models through paddle2onnx."""
    import paddle
    from paddle.static import InputSpec

    zoo = paddle.vision.models
    models = {
        "resnet18": (lambda: zoo.resnet18(), 64),
        "mobilenet_v2": (lambda: zoo.mobilenet_v2(scale=0.5), 64),
        "mobilenet_v3_small": (lambda: zoo.mobilenet_v3_small(scale=0.5), 64),
        "shufflenet_v2_x0_5": (lambda: zoo.shufflenet_v2_x0_5(), 64),
        "densenet121": (lambda: zoo.densenet121(), 64),
        "squeezenet1_1": (lambda: zoo.squeezenet1_1(), 64),
        "mobilenet_v1": (lambda: zoo.mobilenet_v1(scale=0.5), 64),
        "resnext50_32x4d": (lambda: zoo.resnext50_32x4d(), 64),
        "inception_v3": (lambda: zoo.inception_v3(), 96),
    }
    for name, (build, size) in models.items():
        if names and name not in names:
            continue
        model = lively_paddle(build(), size)
        paddle.onnx.export(model, str(folder / f"paddle_{name}"), opset_version=13,
                           input_spec=[InputSpec([None, 3, size, size], "float32", "x")])
        print(f"paddle_{name}: exported", flush=True)


def check(folder: Path, names: list[str]) -> None:
    """Prune every export in ``folder`` and check it against the masking oracle."""
    import onnx

    import onnxprune
    from onnxprune.errors import InputError
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import assert_matches_masked

    for path in sorted(folder.glob("*.onnx")):
        if names and path.stem not in names:
            continue
        try:
            result = onnxprune.prune(path, ratio=0.5, round_to=1, latency=False)
        except InputError as exc:
            print(f"{path.stem}: refused: {exc}")
            continue
        try:
            assert_matches_masked(onnx.load(path), result.model, result.report)
            oracle = "masking oracle met"
        except AssertionError as exc:
            oracle = f"MASKING ORACLE FAILED ({exc})"
        pinned = [g["pinned_reason"] for g in result.report["groups"] if g["pinned_reason"]]
        print(f"{path.stem}: MACs {result.original.macs:,} -> {result.pruned.macs:,}; {oracle}; "
              f"{len(pinned)} of {len(result.report['groups'])} groups pinned")
        for reason in sorted(set(pinned)):
            print(f"    {reason}")


def main() -> None:
    commands = {"export-keras": export_keras, "export-paddle": export_paddle, "check": check}
    if len(sys.argv) < 3 or sys.argv[1] not in commands:
        sys.exit(f"usage: python {sys.argv[0]} {{{'|'.join(commands)}}} FOLDER [NAME ...]")
    folder = Path(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    commands[sys.argv[1]](folder, sys.argv[3:])


if __name__ == "__main__":
    main()
