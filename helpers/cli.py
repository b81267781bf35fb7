"""``facekp``: the project's one command line (``facekp --help``; the README lists every command). It parses arguments
and calls the modules that do the work; a bad input ends in one line and exit code 1 (``--debug``: the traceback)."""
import argparse
import json
import os
import sys
import traceback
import warnings
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from . import config

config.import_keras()      # TensorFlow's C++ start-up messages silenced before the modules below import Keras

from . import data, detect, download, evaluate, export, plots, predict, shape, splits, train, video  # noqa: E402

ERRORS = (FileNotFoundError, ValueError, OSError, NotImplementedError, KeyError)  # reported in one line


def skipped_lines(skipped, limit: int = 20) -> str:
    """A batch's skipped inputs ``[{path, reason}]`` as lines for stderr."""
    lines = [f"skipped: {s['path']}: {s['reason']}" for s in skipped[:limit]]
    return "\n".join(lines + [f"... and {len(skipped) - limit} more"] * (len(skipped) > limit))


def data_report(spec: str, progress: bool, catch: bool = True) -> dict:
    """Faces, people, split sizes and skipped faces of one data set (``catch``: or the error that stopped it)."""
    try:
        faces = splits.load_faces(spec, None, progress=progress)
    except ERRORS as e:
        if not catch:
            raise
        return {"name": spec, "error": str(e)}
    table = splits.split_table({s: faces.subset(splits.split_of(faces) == s) for s in splits.SPLITS})
    return {"name": spec, "path": str(data.parse_spec(spec).path), "faces": len(faces), "people": faces.num_people,
            "keypoints_per_face": faces.scheme.num_keypoints, "skipped": faces.skipped_records(),
            "keypoint_warnings": len(faces.warnings),
            "splits": {s: {"faces": int(table.loc[s, "faces"]), "people": int(table.loc[s, "people"])}
                       for s in splits.SPLITS},
            "people_in_two_splits": int(table.attrs["people_in_two_splits"])}


def cmd_data(args) -> int | None:
    """Every data set found (or the one named): a bad one is reported and the others still listed."""
    specs = [args.name] if args.name else data.available()
    if not specs:
        raise FileNotFoundError(f"no data sets found under {config.data_root()}: set FKP_DATA_DIR to the folder "
                                "that holds youtube-faces-68/, 300w-subset/ or kaggle/ (see data/README.md)")
    report = [data_report(spec, progress=not args.json, catch=not args.name) for spec in specs]
    failed = any("error" in r or r["skipped"] for r in report)
    if args.json:
        print(json.dumps(report if len(report) > 1 or not args.name else report[0], indent=2))
        return int(failed)
    print(f"data root: {config.data_root()}")
    for r in report:
        if "error" in r:
            print(f"{r['name']:<20} error: {r['error']}", file=sys.stderr)
            continue
        sp = ", ".join(f"{s} {v['faces']} faces / {v['people']} people" for s, v in r["splits"].items())
        print(f"{r['name']:<20} {r['faces']:>6} faces {r['people']:>6} people {r['keypoints_per_face']:>3} "
              f"keypoints   [{sp}]   {r['path']}")
        if r["skipped"]:
            print(f"{'':<20} {len(r['skipped'])} face(s) skipped:\n" + skipped_lines(r["skipped"]), file=sys.stderr)
    return int(failed)


def image_inputs(paths) -> tuple[list[Path], list[dict], list[str]]:
    """Files as given, folders expanded (recursively, sorted) to their image files; also what could not be listed
    (``[{path, reason}]``: broken links, link loops, unreadable folders) and a folder's files that are not images."""
    files, skipped, ignored = [], [], []
    for p in map(Path, paths):
        if not p.is_dir():
            files.append(p)
            continue
        for top, dirs, names in sorted(os.walk(p, onerror=lambda e: skipped.append(
                {"path": e.filename, "reason": f"cannot list this folder ({e.strerror})"}))):
            for name in sorted(names) + sorted(d for d in dirs if Path(top, d).is_symlink()):
                f = Path(top, name)
                if f.is_symlink() and not f.exists():
                    skipped.append({"path": str(f), "reason": "a broken link or a link loop"})
                elif f.is_dir():
                    skipped.append({"path": str(f), "reason": "a link to a folder (not followed)"})
                elif f.suffix.lower() in data.IMAGE_SUFFIXES:
                    files.append(f)
                else:
                    ignored.append(str(f))
    return files, skipped, ignored


def cmd_predict(args) -> int | None:
    inputs, skipped, ignored = image_inputs(args.paths)
    if not inputs:
        raise FileNotFoundError("no images found in " + ", ".join(args.paths) + (
            f" ({len(ignored)} other file(s), {len(skipped)} unlistable)" if ignored or skipped else ""))
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"--out {out_dir} is a file; name a folder for the annotated images")
    overrides = {k: v for k, v in (("scale_factor", args.scale_factor), ("min_neighbors", args.min_neighbors),
                                   ("min_size", args.min_size), ("max_side", args.max_side)) if v is not None}
    if overrides.get("max_side") == 0:
        overrides["max_side"] = None                                  # 0: detect at full size
    predictor = predict.Predictor(args.model, detect.DetectorParams(**overrides),
                                  detect.UNCALIBRATED if args.no_calibration else None, runtime=args.runtime)
    out_dir.mkdir(parents=True, exist_ok=True)
    results, used = [], set()
    for s in skipped:
        tqdm.write(skipped_lines([s]), file=sys.stderr)
    for path in tqdm(inputs, desc="facekp predict", unit="image", disable=args.quiet):
        try:
            pred = predictor(path)
        except (OSError, ValueError) as e:      # data.ImageReadError is a ValueError
            skipped.append({"path": str(path), "reason": getattr(e, "reason", str(e))})
            tqdm.write(skipped_lines(skipped[-1:]), file=sys.stderr)
            continue
        stem = path.stem
        while stem in used:                      # two inputs with one name: keep both outputs
            stem += "_"
        used.add(stem)
        out_path = out_dir / f"{stem}_keypoints.png"
        annotated = plots.draw_keypoints_cv(pred.image, pred.keypoints, pred.scheme, pred.boxes)
        ok, buf = cv2.imencode(out_path.suffix, cv2.cvtColor(annotated, cv2.COLOR_RGB2BGR))
        if ok:
            buf.tofile(str(out_path))
        record = {**pred.to_dict(), "annotated": str(out_path)}
        if args.json:
            (out_dir / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
        results.append(record)
        if not args.json and not args.quiet:
            tqdm.write(f"{path}: {len(pred)} face(s), {pred.timings['total']:.0f} ms -> {out_path}")
    if args.json:
        print(json.dumps({"model": predictor.model.name, "runtime": predictor.model.runtime, "images": results,
                          "skipped": skipped, "ignored": ignored}, indent=2))
    else:
        print(f"{len(results)} image(s) done, {sum(r['num_faces'] for r in results)} face(s); {len(skipped)} "
              f"skipped; outputs in {out_dir}" + (f"; {len(ignored)} file(s) that are not images ignored: "
                                                  + ", ".join(ignored[:5]) + " ..." * (len(ignored) > 5)
                                                  if ignored else ""), file=sys.stderr)
    return 1 if skipped else 0


def cmd_evaluate(args) -> int | None:
    model = predict.load_keypoint_model(args.model, warm_up=False, runtime=args.runtime)
    result = evaluate.evaluate(model, args.data, split=args.split, max_faces=args.max_faces,
                               timing=not args.no_timing, progress=not args.json)
    result["model_path"] = getattr(model.model, "source_path", args.model)
    r = evaluate.report_json(result)
    if args.json:
        print(json.dumps(r, indent=2))
        return int(bool(r["skipped"]))
    if r["skipped"]:
        print(f"{len(r['skipped'])} face(s) of {args.data} skipped:\n" + skipped_lines(r["skipped"]), file=sys.stderr)
    print(f"{r['model']} on {r['data']} ({r['split']}): {r['faces']} faces\n"
          f"  NME {r['nme']:.2f} % (normalised by the {r['normaliser']}), RMSE {r['rmse_px96']:.2f} px at 96x96\n"
          f"  AUC@0.08 {r['auc08']:.2f} %, failures above 0.08: {r['fail08']:.2f} %, above 0.10: {r['fail10']:.2f} %")
    if "ms_per_face" in r:
        print(f"  speed: {r['latency_ms']:.1f} ms for one face, {r['throughput_ips']:.0f} faces/s in batches "
              f"({r['ms_per_face']:.2f} ms/face)")
    return int(bool(r["skipped"]))


def frame_ranges(indices) -> str:
    """[3, 4, 5, 9] → "3-5, 9"."""
    runs = []
    for i in indices:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs)


def cmd_video(args) -> int | None:
    if (args.input is None) == (args.webcam is None):
        raise ValueError("give a video file or --webcam N (not both)")
    predictor = predict.Predictor(args.model, runtime=args.runtime)
    model = None if args.no_shape_check else shape.ShapeModel.load()
    r = video.track(args.input if args.webcam is None else args.webcam, predictor, args.smooth, model, args.out,
                    args.json, args.max_frames, progress=not args.quiet, overlay=args.overlay,
                    redetect_every=args.redetect_every)
    n, missing = r["frames_read"], r["frames_without_face"]
    print(f"{r['source']}: {n} frames, a face in {r['frames_with_face']}, detector ran {r['detector_runs']} times, "
          f"{r['repaired']} shape{'' if r['repaired'] == 1 else 's'} repaired, {r['fps']:.0f} frames/s "
          "(decode, track, keypoints, smoothing)"
          + (f"\n  no face in frame(s) {frame_ranges(missing)}" if missing else "")
          + "".join(f"\n  wrote {p}" for p in (args.out, args.json) if p), file=sys.stderr)
    if r["problem"]:
        print(f"error: {r['problem']}", file=sys.stderr)
    return int(bool(r["problem"]))


def cmd_shape(args) -> int | None:
    if args.fit:
        faces = [splits.load_faces(spec, "train", max_faces=args.max_faces) for spec in shape.TRAIN_SPECS]
        model = shape.fit(np.concatenate([f.keypoints for f in faces]))
        print(f"wrote {model.save(args.out or shape.SHAPE_PATH)}")
    model = shape.ShapeModel.load(args.out or shape.SHAPE_PATH)
    print(f"shape model: {len(model.variances)} components keep 98 % of the aligned training shapes' variance; "
          "a typical training face is at distance 1")


def cmd_export(args) -> int | None:
    print(f"{args.model}: int8 model written to {export.export_int8(args.model, max_faces=args.max_faces)}")


def cmd_calibrate(args) -> int | None:
    cal = (detect.fit_calibration(args.specs or detect.DEFAULT_SPECS, max_faces=args.max_faces) if args.fit
           else detect.load_calibration(args.out))
    print(detect.calibration_summary(cal))
    if args.fit:
        print(f"wrote {detect.save_calibration(cal, args.out)}")


def cmd_download(args) -> int | None:
    print(f"{args.name}: ready in {download.download(args.name, url=args.url)}")


def cmd_train(args) -> int | None:
    if config.import_keras().backend.backend() == "tensorflow":
        os.environ.setdefault("TF_XLA_FLAGS", config.XLA_FLAGS)      # read at the first graph; yours is kept
    result = train.train(args.recipe, args.profile, args.out, restart=args.restart, progress=True)
    s = result.summary
    print(f"{result.model_path}: best epoch {s['best_epoch']} of {s['epochs_run']} ({s['stopped_by']}), validation "
          f"NME {100 * s['best_val_nme']:.2f} %, {s['train_seconds'] / 60:.1f} min")


def cmd_table(args) -> int | None:
    table = train.experiments_table(args.runs)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
    print(table.to_string(index=False))


def cmd_readme(args) -> int | None:
    text = train.models_readme()
    (config.MODELS_DIR / "README.md").write_text(text)
    print(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facekp", description="Facial keypoint detection: data, training, "
                                     "evaluation, prediction.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, func, help):
        p = sub.add_parser(name, help=help)
        p.set_defaults(func=func)
        return p

    def model_options(p, model: str, runtime: str) -> None:         # the commands that run a network
        p.add_argument("--model", default=model,
                       help=f"a model under models/ (lenet, resnet50) or a .keras file (default: {model})")
        p.add_argument("--runtime", default=runtime, choices=predict.RUNTIMES, help=f"forward pass (default "
                       f"{runtime}); auto: the faster ONNX graph when an int8 export exists, else Keras")

    p = command("data", cmd_data, "list the data sets found, with faces, people and split sizes")
    p.add_argument("name", nargs="?", help="youtube-faces-68, 300w/afw, 300w/helen-train, 300w/lfpw-train, "
                   "kaggle or KIND:PATH")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command("download", cmd_download, "fetch a data set into the data root (FKP_DATA_DIR or data/)")
    p.add_argument("name", choices=["youtube-faces-68", "portraits", "videos", "kaggle", "300w"])
    p.add_argument("--url", help="another location of the same archive (e.g. a mirror or a file:// URL)")

    p = command("train", cmd_train, "train a recipe (or an experiment) from scratch; resumes an interrupted run")
    p.add_argument("recipe", help="a recipe file, e.g. recipes/lenet.toml or experiments/lenet_flip.toml")
    p.add_argument("--profile", help="smoke | quick | full: scales faces read and epochs "
                   "(default: $FKP_PROFILE, else quick)")
    p.add_argument("--out", help="run folder (default: models/runs/<recipe>-<profile>); the "
                   "committed models are trained with --profile full --out models/<recipe>")
    p.add_argument("--restart", action="store_true", help="discard an earlier run in the folder and start afresh")

    p = command("table", cmd_table, "collect finished runs' summaries into one table (the chapters' experiments)")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders holding summary.json")
    p.add_argument("--out", help="also write the table as CSV here")

    command("readme", cmd_readme, "regenerate models/README.md from the committed run folders (measures them)")

    p = command("evaluate", cmd_evaluate, "accuracy and speed of a trained model on a data set split")
    model_options(p, "resnet50", "keras")
    p.add_argument("--data", required=True, metavar="SPEC", help="youtube-faces-68, 300w/afw, 300w/helen-train, "
                   "300w/lfpw-train (their saved splits) or 300w:PATH (every image + .pts pair of a folder)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="split of a named data set "
                   "(default: test; ignored for 300w:PATH)")
    p.add_argument("--max-faces", type=int, help="read at most this many faces")
    p.add_argument("--no-timing", action="store_true", help="skip the speed measurement")
    p.add_argument("--json", action="store_true", help="print one JSON object (NME, failure rates, AUC in %%)")

    p = command("predict", cmd_predict, "detect faces and their keypoints in photographs; write annotated images")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of images")
    model_options(p, "lenet", "auto")
    p.add_argument("--out", default="predictions", help="folder for annotated images and JSON")
    p.add_argument("--json", action="store_true", help="write <name>.json per image and print all results as JSON")
    # detector defaults live in helpers.detect.DetectorParams; an option given here overrides one field
    p.add_argument("--scale-factor", type=float, help="Haar cascade scaleFactor (default 1.1)")
    p.add_argument("--min-neighbors", type=int, help="Haar cascade minNeighbors (default 5)")
    p.add_argument("--min-size", type=float, help="smallest face as a fraction of the detection image's "
                   "shorter side (default 0.15; lower it for small faces in group photos)")
    p.add_argument("--max-side", type=int, help="detect on a copy downscaled to this longer side "
                   "(0: full size; default 400)")
    p.add_argument("--no-calibration", action="store_true", help="crop the raw detector boxes (for comparison)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = command("video", cmd_video, "keypoints in a video file or a webcam: tracked, smoothed, checked")
    p.add_argument("input", nargs="?", help="a video file (anything OpenCV reads: .mp4, .avi, ...)")
    p.add_argument("--webcam", type=int, metavar="N", help="read camera N instead of a file")
    p.add_argument("--out", help="write the annotated video here (.mp4 or .avi)")
    p.add_argument("--json", metavar="FILE.jsonl", help="write one JSON line per frame here")
    p.add_argument("--smooth", default="one-euro", choices=sorted(video.SMOOTHERS), help="temporal smoothing")
    model_options(p, "resnet50", "auto")
    p.add_argument("--redetect-every", type=int, default=10, help="run the face detector every N frames "
                   "(also when the face leaves the picture or looks implausible)")
    p.add_argument("--no-shape-check", action="store_true", help="do not check or repair shapes")
    p.add_argument("--overlay", choices=["glasses"], help="draw glasses on the face instead of the keypoints")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = command("shape", cmd_shape, "the statistical shape model behind the video's anatomical check")
    p.add_argument("--fit", action="store_true", help="fit it on the training splits and write it")
    p.add_argument("--max-faces", type=int, help="read at most this many faces per data set")
    p.add_argument("--out", help="shape model file (default: models/shape68.json)")

    p = command("export", cmd_export, "quantize a trained model to int8 ONNX for fast CPU inference")
    p.add_argument("model", help="lenet, resnet50 or a .keras file")
    p.add_argument("--max-faces", type=int, default=256, help="training faces that calibrate the int8 ranges")

    p = command("calibrate", cmd_calibrate, "show the Haar-box → training-crop calibration; --fit refits it")
    p.add_argument("--fit", action="store_true", help="fit it on the specs' train splits and write it")
    p.add_argument("--specs", nargs="+", help="data sets to fit on (default: youtube-faces-68 300w/helen-train)")
    p.add_argument("--max-faces", type=int, help="read at most this many faces per data set")
    p.add_argument("--out", help="calibration file (default: helpers/calibration.json)")
    return parser


def format_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as one line ("warning: ..."), without the file and source line Python shows by default."""
    return f"warning: {message}\n"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = format_warning                # formatting only: recorders (pytest.warns) still see it
    try:
        return args.func(args) or 0
    except Exception as e:                                  # noqa: BLE001 - no traceback for a user, unless asked
        if args.debug:
            traceback.print_exc()
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {message}" if isinstance(e, ERRORS) else f"error: {type(e).__name__}: {message} (unexpected: "
              "rerun with --debug for the traceback, and please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
