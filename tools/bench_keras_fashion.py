"""Accuracy without retraining on a Keras model exported by tf2onnx: a small BN CNN trained on
Fashion-MNIST (NHWC, raw pixels rescaled inside the model), pruned to half its MACs with and without
compensation, calibrated on 1,000 training images, accuracy on the 10,000 test images.

Training needs TensorFlow, which does not install beside PyTorch (see ``export_foreign_fixtures.py``);
the evaluation runs in onnxprune's environment; both need ``apt-get install dataset-fashion-mnist``::

    /tmp/tfenv/bin/python tools/bench_keras_fashion.py train /tmp/keras_fashion.onnx
    python tools/bench_keras_fashion.py eval /tmp/keras_fashion.onnx
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import tempfile

import numpy as np

DATA = "/usr/share/datasets/fashion-mnist"
EPOCHS = 3


def load(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images as float32 NHWC pixels in [0, 255], and their labels."""
    with gzip.open(f"{DATA}/{kind}-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)
    with gzip.open(f"{DATA}/{kind}-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return x.astype(np.float32), y.astype(np.int64)


def train(path: str) -> None:
    """Train the CNN for EPOCHS epochs and export it with tf2onnx."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    layers = tf.keras.layers
    tf.keras.utils.set_random_seed(0)

    def block(x, channels: int, stride: int = 1):
        x = layers.Conv2D(channels, 3, stride, padding="same", use_bias=False)(x)
        return layers.ReLU()(layers.BatchNormalization()(x))

    images = layers.Input((28, 28, 1))
    x = layers.Rescaling(1 / 255.0)(images)
    for channels, stride in ((32, 1), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1)):
        x = block(x, channels, stride)
    x = layers.Dense(128, activation="relu")(layers.GlobalAveragePooling2D()(x))
    model = tf.keras.Model(images, layers.Dense(10)(x))
    model.compile(optimizer=tf.keras.optimizers.Adam(2e-3), metrics=["accuracy"],
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    (x_train, y_train), (x_test, y_test) = load("train"), load("t10k")
    model.fit(x_train, y_train, batch_size=128, epochs=EPOCHS, verbose=2)
    print(f"test accuracy in Keras: {model.evaluate(x_test, y_test, verbose=0)[1]:.4f}")
    with tempfile.TemporaryDirectory() as saved:
        model.export(saved, verbose=False)
        subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", saved, "--opset", "13",
                        "--output", path], check=True, capture_output=True)
    print(f"wrote {path}")


def evaluate(path: str) -> None:
    """Prune at --target-macs 0.5 (defaults, and --round-to 4 --group-cap 0.5), with and without
    compensation, and print test accuracy against the original's."""
    import onnxruntime as ort

    import onnxprune

    (x_train, y_train), (x_test, y_test) = load("train"), load("t10k")
    name = ort.InferenceSession(path).get_inputs()[0].name

    def accuracy(model) -> float:
        session = ort.InferenceSession(model if isinstance(model, str) else model.SerializeToString())
        predicted = np.concatenate([session.run(None, {name: x_test[i:i + 500]})[0].argmax(1)
                                    for i in range(0, len(x_test), 500)])
        return float((predicted == y_test).mean() * 100)

    original = accuracy(path)
    print(f"original: {original:.2f}%")
    chosen = np.random.default_rng(0).choice(len(x_train), 1000, replace=False)
    calibration = [{name: x_train[chosen], "labels": y_train[chosen]}]
    for options in ({}, {"round_to": 4, "group_cap": 0.5}):
        for compensate in (True, False):
            result = onnxprune.prune(path, target_macs=0.5, calib=calibration, compensate=compensate, latency=False,
                                     **options)
            pruned = accuracy(result.model)
            print(f"{options or 'defaults'}, compensation {'on' if compensate else 'off'}: MACs kept "
                  f"{result.pruned.macs / result.original.macs:.3f}, {pruned:.2f}% ({pruned - original:+.2f})")


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in ("train", "eval"):
        sys.exit(f"usage: python {sys.argv[0]} {{train|eval}} MODEL.onnx")
    (train if sys.argv[1] == "train" else evaluate)(sys.argv[2])


if __name__ == "__main__":
    main()
