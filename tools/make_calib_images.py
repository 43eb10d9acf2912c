"""Write ``models/calib_images/``: small natural-image crops for calibrating the 32x32 fixtures.

The crops come from the sample images that ship inside scikit-image (``skimage/data``); pass the
folder with ``--source`` (an unpacked wheel works too: ``pip download scikit-image --no-deps`` and
unzip it). Only the small derived crops are committed.

Usage::

    python tools/make_calib_images.py --source /path/to/skimage/data [--count 64] [--size 40]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "retina.jpg",
           "ihc.png", "hubble_deep_field.jpg", "color.png", "immunohistochemistry.png", "camera.png", "coins.png",
           "grass.png", "gravel.png", "brick.png", "moon.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="scikit-image's data folder")
    parser.add_argument("--out", default=str(ROOT / "models/calib_images"))
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--size", type=int, default=40, help="side of the saved crops")
    args = parser.parse_args()
    images = [Image.open(Path(args.source) / name).convert("RGB") for name in SOURCES
              if (Path(args.source) / name).exists()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(args.count):
        image = images[index % len(images)]
        side = int(rng.integers(min(image.size) // 6, min(image.size) // 2))
        left = int(rng.integers(0, image.width - side))
        top = int(rng.integers(0, image.height - side))
        crop = image.crop((left, top, left + side, top + side)).resize((args.size, args.size), Image.BILINEAR)
        crop.save(out / f"crop_{index:03d}.jpg", quality=90)
    print(f"{args.count} crops from {len(images)} images written to {out}")


if __name__ == "__main__":
    main()
