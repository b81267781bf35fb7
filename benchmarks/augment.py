"""Benchmark: is on-the-fly augmentation fast enough never to slow training down?

Measures, in one run on this machine:

1. images/s of the on-the-fly pipeline (``KeypointSequence`` with the default ``Augmenter``: flip, rotation,
   scale, shift, photometric; output = model-ready float32 batches) for 96² gray batches,
   **on one core** (the main process, OpenCV limited to one thread) and **on all cores**, both ways a
   ``keras.utils.PyDataset`` can run workers: one thread per core, and one forked process per core with the
   batches pickled back to the parent;
2. training rates (images/s, forward + backward + update, ``train_on_batch`` on one batch of the same faces, no
   input pipeline) of the LeNet-inspired network and ResNet-50 of ``helpers.models``, ResNet-50 on a few batches
   (``benchmarks/training.py`` measures whole ``model.fit`` epochs with and without XLA);
3. the cost of augmentation inside training, two ways: the CPU time of augmenting a batch on one core as a
   share of a LeNet training step, and the wall-clock rate of LeNet fed by an augmenting sequence versus the
   same sequence without augmentation, both through ``model.fit`` (threads, ``workers=2``), alternated.

Targets: the pipeline on **one** core delivers ≥ 20× the rate of the model it feeds, and costs ≤ 10 %
of a training step when both run together.

Run from the project root: ``.venv/bin/python benchmarks/augment.py`` (about 3 minutes on 2 busy CPU cores).
The last line is machine-readable::

    augment_img_per_s=N lenet_train_img_per_s=N resnet50_train_img_per_s=N ratio_vs_lenet=N

where ``augment_img_per_s`` is the one-core rate (the conservative figure: training uses the other cores) and
``ratio_vs_lenet = augment_img_per_s / lenet_train_img_per_s``.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import time
from multiprocessing.pool import ThreadPool

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from helpers import config, data, models  # noqa: E402
from helpers.augment import Augmenter, KeypointSequence  # noqa: E402
from helpers.schemes import SCHEME_68  # noqa: E402
from helpers.splits import load_faces  # noqa: E402

BATCH = 32


def faces(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """Real training faces when the data set is present, else synthetic ones (augmentation's rate hardly depends
    on content; a network's on the CPU can, so its rates are quoted with the faces' source)."""
    if "youtube-faces-68" in data.available():
        f = load_faces("youtube-faces-68", "train", max_faces=max(n, 200), progress=False)
        reps = int(np.ceil(n / len(f)))
        return np.tile(f.images, (reps, 1, 1))[:n], np.tile(f.keypoints, (reps, 1, 1))[:n], "youtube-faces-68"
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, config.IMAGE_SIZE, config.IMAGE_SIZE), dtype=np.uint8)
    kps = rng.uniform(20, 76, (n, 68, 2)).astype(np.float32)
    return images, kps, "synthetic"


def timed(fn, min_seconds: float) -> tuple[int, float]:
    """Call ``fn()`` (returns images processed) until ``min_seconds`` have passed; (images, seconds)."""
    count, start = 0, time.perf_counter()
    while True:
        count += fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return count, elapsed


# ---------------------------------------------------------------------------------------- pipeline rates
_SEQ: KeypointSequence | None = None


def _worker_init(seq: KeypointSequence) -> None:
    global _SEQ
    _SEQ = seq
    cv2.setNumThreads(1)


def _worker_batch(i: int):
    return _SEQ[i % len(_SEQ)]


def pipeline_rate_one_core(seq: KeypointSequence, seconds: float) -> float:
    cv2.setNumThreads(1)
    seq[0]                                                       # warm-up
    state = {"i": 0}

    def step():
        x, _ = seq[state["i"] % len(seq)]
        state["i"] += 1
        return len(x)

    n, t = timed(step, seconds)
    return n / t


def pipeline_rate_threads(seq: KeypointSequence, seconds: float, workers: int) -> float:
    """All cores with threads (``PyDataset(workers=N)``): OpenCV and most NumPy kernels release the GIL."""
    cv2.setNumThreads(1)
    with ThreadPool(workers) as pool:
        list(pool.imap(_thread_batch(seq), range(workers * 2)))  # warm-up
        total, start = 0, time.perf_counter()
        while True:
            for x, _ in pool.imap_unordered(_thread_batch(seq), range(max(workers * 8, 16))):
                total += len(x)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return total / elapsed


def _thread_batch(seq):
    return lambda i: seq[i % len(seq)]


def pipeline_rate_processes(seq: KeypointSequence, seconds: float, workers: int) -> float:
    """All cores with forked processes (``PyDataset(workers=N, use_multiprocessing=True)``), batches pickled back."""
    ctx = mp.get_context("fork")
    with ctx.Pool(workers, initializer=_worker_init, initargs=(seq,)) as pool:
        list(pool.imap(_worker_batch, range(workers * 2)))       # warm-up
        n_batches = max(workers * 8, 16)
        total, start = 0, time.perf_counter()
        while True:
            for x, _ in pool.imap_unordered(_worker_batch, range(n_batches), chunksize=2):
                total += len(x)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return total / elapsed


# ---------------------------------------------------------------------------------------- model rates
def build(name: str) -> keras.Model:
    return models.compile_model(models.build_model(name), SCHEME_68)


def train_rate(model: keras.Model, batch: tuple[np.ndarray, np.ndarray], batches: int, warmup: int = 2) -> float:
    """images/s of ``train_on_batch`` on one fixed batch (no input pipeline at all)."""
    for _ in range(warmup):
        model.train_on_batch(*batch)
    start = time.perf_counter()
    for _ in range(batches):
        model.train_on_batch(*batch)
    return batches * len(batch[0]) / (time.perf_counter() - start)


def fit_rate(model: keras.Model, seq: KeypointSequence, steps: int, warmup: bool = False) -> float:
    """images/s of ``model.fit`` fed by ``seq`` for ``steps`` batches (optionally after a 2-step warm-up)."""
    if warmup:
        model.fit(seq, epochs=1, steps_per_epoch=2, verbose=0)
    start = time.perf_counter()
    model.fit(seq, epochs=1, steps_per_epoch=steps, verbose=0)
    return steps * BATCH / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="time per pipeline measurement")
    parser.add_argument("--lenet-batches", type=int, default=15)
    parser.add_argument("--resnet-batches", type=int, default=3)
    parser.add_argument("--fit-steps", type=int, default=6)
    parser.add_argument("--fit-rounds", type=int, default=4)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(config.DEFAULT_SEED)
    cores = os.cpu_count() or 1
    images, kps, source = faces(1024)
    print(f"machine: {config.machine()}; Python {platform.python_version()}, "
          f"Keras {keras.__version__} ({keras.backend.backend()}), OpenCV {cv2.__version__}, NumPy {np.__version__}")
    print(f"faces: {len(images)} from {source}, batch {BATCH}, 96x96 gray uint8 -> float32 (B, 96, 96, 1)")

    seq = KeypointSequence(images, kps, SCHEME_68, BATCH, augmenter=Augmenter(SCHEME_68), shuffle=True, seed=1)
    one = pipeline_rate_one_core(seq, args.seconds)
    print(f"augment pipeline, 1 core:         {one:9.0f} img/s")
    threads = pipeline_rate_threads(seq, args.seconds, cores)
    print(f"augment pipeline, {cores} cores, {cores} threads:   {threads:9.0f} img/s")
    procs = pipeline_rate_processes(seq, args.seconds, cores)
    print(f"augment pipeline, {cores} cores, {cores} processes: {procs:9.0f} img/s")
    allc = max(threads, procs)
    cv2.setNumThreads(-1)

    batch = seq[0]                                               # one augmented batch of the same faces
    lenet = build("lenet")
    lenet_rate = train_rate(lenet, batch, args.lenet_batches)
    print(f"LeNet train ({source} faces):      {lenet_rate:9.1f} img/s")
    resnet = build("resnet50")
    resnet_rate = train_rate(resnet, batch, args.resnet_batches, warmup=1)
    print(f"ResNet-50 train ({source} faces): {resnet_rate:9.1f} img/s  ({args.resnet_batches} batches)")
    del resnet

    # Cost inside training. (a) CPU time: augmenting a batch on one core against a LeNet step on all cores.
    cpu_share = lenet_rate / one
    print(f"augmentation CPU time per LeNet training step: {100 * cpu_share:.1f} %  (target <= 10 %)")
    # (b) Wall clock: LeNet fed through model.fit by the same sequence with and without augmentation
    # (threads, workers=2). Alternated in short rounds so that load from other processes hits both alike.
    plain = KeypointSequence(images, kps, SCHEME_68, BATCH, augmenter=None, shuffle=True, seed=1, workers=2)
    augmented = KeypointSequence(images, kps, SCHEME_68, BATCH, augmenter=Augmenter(SCHEME_68), shuffle=True,
                                 seed=1, workers=2)
    rates = {"plain": [], "augmented": []}
    for i in range(args.fit_rounds):
        rates["plain"].append(fit_rate(lenet, plain, args.fit_steps, warmup=i == 0))
        rates["augmented"].append(fit_rate(lenet, augmented, args.fit_steps, warmup=i == 0))
    r_plain, r_aug = np.median(rates["plain"]), np.median(rates["augmented"])
    spread = (np.max(rates["plain"]) - np.min(rates["plain"])) / r_plain
    print(f"LeNet fit, no augmentation:       {r_plain:9.1f} img/s  (runs {np.round(rates['plain'], 1).tolist()})")
    print(f"LeNet fit, on-the-fly augment:    {r_aug:9.1f} img/s  (runs {np.round(rates['augmented'], 1).tolist()})")
    print(f"wall-clock slowdown of a LeNet step with augmentation: {100 * (1 - r_aug / r_plain):.1f} % "
          f"(median of {args.fit_rounds} rounds; run-to-run spread without augmentation {100 * spread:.0f} %)")

    ratio = one / lenet_rate
    print(f"pipeline (1 core) / LeNet training: {ratio:.1f}x  (target >= 20x; "
          f"{'met' if ratio >= 20 else 'NOT met'}); vs ResNet-50: {one / resnet_rate:.0f}x; "
          f"all cores / LeNet: {allc / lenet_rate:.1f}x")
    print(f"augment_img_per_s={one:.0f} lenet_train_img_per_s={lenet_rate:.1f} "
          f"resnet50_train_img_per_s={resnet_rate:.1f} ratio_vs_lenet={ratio:.1f}")


if __name__ == "__main__":
    main()
