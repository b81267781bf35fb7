"""Benchmark: video tracking and smoothing (chapter 09).

Jitter needs ground truth, which real clips do not have, so annotated validation photographs (HELEN and LFPW, never
trained on) are turned into clips with known keypoints in every frame (``helpers.video.moving_sequence``: a smooth
random path of shifts, rotations and scale changes, sensor noise and JPEG re-encoding; and a still version with
fresh noise only). Each is tracked once and the raw track smoothed three ways (none, a 5-frame average, One Euro with
its prediction step, the default of ``helpers.video.OneEuro``).
Then the two real talking-head clips are run end to end (decode, detect/track, keypoints, smoothing, shape check)
to measure how often the face is kept and the frames per second.

Targets: smoothing cuts jitter by at least half on moving and still sequences while NME on the moving ones rises
by at most 0.1 points; the face is kept in at least 99 % of the real clips' frames; at least 50 frames/s.
The targets are judged in the full profile (40 photographs × 100 frames); the default profile's 10 × 50 frames
is a quicker, noisier estimate. Each target is printed with its verdict.

Run from the project root: ``.venv/bin/python benchmarks/video.py [--model resnet50] [--profile full]``. The last
line is machine-readable (percent for NME and jitter, One Euro for "smoothed", moving sequences for NME and lag)::

    jitter_raw=N jitter_smoothed=N nme_raw=N nme_smoothed=N lag_frames=N fps=N detector_runs_per_100=N
"""
import argparse

import numpy as np

from helpers import config, data, predict, shape, video

CLIPS = ("talking_head_1.mp4", "talking_head_2.mp4")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--profile", default=None)
    args = parser.parse_args()
    profile = config.get_profile(args.profile)
    count, frames = profile.video_sequences
    predictor = predict.Predictor(args.model)
    print(f"model {args.model} ({predictor.model.runtime}), profile {profile.name}: {count} photographs, "
          f"{frames} frames each, moving and still")
    table = video.smoothing_table(predictor, *video.validation_photos(count), data.SCHEME_68, frames)
    summary = table.groupby(["motion", "smoother"])[["nme", "jitter", "lag", "kept", "detector_runs"]].mean()
    summary[["nme", "jitter"]] *= 100
    print(summary.round(3).to_string())
    clips = [video.track(config.data_root() / "videos" / c, predictor, "one-euro", shape.ShapeModel.load(),
                         max_frames=frames * 2, progress=False) for c in CLIPS]
    for c in clips:
        print(f"{c['source']}: face kept in {c['frames_with_face']} of {c['frames_read']} frames, "
              f"{c['detector_runs']} detector runs, {c['repaired']} repaired, {c['fps']:.0f} frames/s")
    moving, still = summary.loc["moving"], summary.loc["still"]
    fps = sum(c["frames_read"] for c in clips) / sum(c["frames_read"] / c["fps"] for c in clips)
    runs = 100 * sum(c["detector_runs"] for c in clips) / sum(c["frames_read"] for c in clips)
    kept = sum(c["frames_with_face"] for c in clips) / sum(c["frames_read"] for c in clips)
    checks = [("jitter, moving", moving.jitter["one-euro"] / moving.jitter["none"], "≤", 0.5),
              ("jitter, still", still.jitter["one-euro"] / still.jitter["none"], "≤", 0.5),
              ("NME change (points)", moving.nme["one-euro"] - moving.nme["none"], "≤", 0.1),
              ("face kept (%)", 100 * kept, "≥", 99), ("frames/s", fps, "≥", 50)]
    for name, value, sign, limit in checks:
        met = value <= limit if sign == "≤" else value >= limit
        print(f"target {name}: {value:.3g} ({sign} {limit:g}) {'met' if met else 'MISSED'}")
    print(f"jitter_raw={moving.jitter['none']:.4f} jitter_smoothed={moving.jitter['one-euro']:.4f} "
          f"nme_raw={moving.nme['none']:.4f} nme_smoothed={moving.nme['one-euro']:.4f} "
          f"lag_frames={moving.lag['one-euro']:.2f} fps={fps:.1f} detector_runs_per_100={runs:.1f}")


if __name__ == "__main__":
    main()
