"""Benchmark: how fast each recipe trains on this machine, with TensorFlow's XLA auto-clustering off and on.

For each recipe in ``recipes/`` and each setting of ``TF_XLA_FLAGS`` (unset, and ``helpers.config.XLA_FLAGS``, which
``facekp train`` sets unless you set your own), a fresh process (TensorFlow reads the flags once) builds the recipe's
compiled model (``helpers.train.new_model``), feeds it real training faces through the recipe's augmentation
(``KeypointSequence``, as ``facekp train`` does) and times ``model.fit``: one warm-up epoch (tracing and XLA
compilation), then ``--batches`` batches. Real faces matter: on fixed random input the same step can run twice as
fast, so random-data rates overstate what training gets.

Run from the project root with the data present (``FKP_DATA_DIR``):
``.venv/bin/python benchmarks/training.py`` (about 10 minutes on 2 CPU cores). The last line is machine-readable::

    lenet_img_per_s=N lenet_xla_img_per_s=N resnet50_img_per_s=N resnet50_xla_img_per_s=N
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from helpers import config, recipes, splits, train
from helpers.augment import Augmenter, KeypointSequence

RECIPES = ("lenet", "resnet50")


def measure(recipe_name: str, batches: int) -> float:
    """images/s of ``model.fit`` over ``batches`` augmented batches of real training faces (after a warm-up)."""
    recipe = recipes.load(config.ROOT / "recipes" / f"{recipe_name}.toml")
    t = recipe["training"]
    faces = splits.load_faces(recipe["data"]["train"][0], "train", max_faces=t["batch_size"] * batches)
    seq = KeypointSequence(faces.images, faces.keypoints, faces.scheme, t["batch_size"],
                           augmenter=Augmenter(faces.scheme, recipes.augment_params(recipe)), shuffle=True,
                           seed=t["seed"])
    model = train.new_model(recipe, len(seq))
    model.fit(seq, epochs=1, verbose=0)                       # tracing, compilation
    start = time.perf_counter()
    model.fit(seq, epochs=2, initial_epoch=1, verbose=0)
    return len(faces) / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=12, help="timed batches per measurement")
    parser.add_argument("--one", nargs=2, metavar=("RECIPE", "BATCHES"), help=argparse.SUPPRESS)   # a child process
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]))))
        return
    rates = {}
    for name in RECIPES:
        for key, flags in ((f"{name}_img_per_s", None), (f"{name}_xla_img_per_s", config.XLA_FLAGS)):
            env = {k: v for k, v in os.environ.items() if k != "TF_XLA_FLAGS"}
            env.update({"TF_XLA_FLAGS": flags} if flags else {})
            out = subprocess.run([sys.executable, __file__, "--one", name, str(args.batches)], env=env, check=True,
                                 capture_output=True, text=True).stdout
            rates[key] = json.loads(out.strip().splitlines()[-1])
            print(f"{name:9s} TF_XLA_FLAGS={flags or '(unset)':45s} {rates[key]:7.1f} images/s", flush=True)
    for name in RECIPES:
        print(f"{name}: XLA auto-clustering trains {rates[f'{name}_xla_img_per_s'] / rates[f'{name}_img_per_s']:.2f}× "
              "as fast")
    print(" ".join(f"{k}={v:.1f}" for k, v in rates.items()))


if __name__ == "__main__":
    main()
