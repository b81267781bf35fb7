"""``facekp``: the project's command line. Thin: it parses arguments and calls the modules that do the work.

    facekp data [NAME] [--json]          data sets found, faces, people, keypoints, split sizes
    facekp predict PATH... [--model lenet|resnet50|FILE] [--runtime auto] [--out DIR] [--json]
                                         faces and keypoints of photographs, annotated images, JSON
    facekp evaluate --model NAME_OR_PATH --data SPEC [--split test] [--runtime keras] [--json]
                                         NME, RMSE, AUC@0.08, failure rates and speed of a model
    facekp export NAME_OR_PATH [--max-faces 256]
                                         quantize a model to int8 ONNX (<name>.int8.onnx) for fast inference
    facekp download NAME [--url URL]     fetch a data set into the data root (checksum-verified)
    facekp train RECIPE [--profile P] [--out DIR] [--restart]
                                         train a recipe from scratch (resumes an interrupted run)
    facekp table RUN... [--out FILE.csv] the summaries of finished runs as one table
    facekp readme                        regenerate models/README.md from the committed runs (measured)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import config

config.import_keras()      # TensorFlow's C++ start-up messages silenced before the modules below import Keras

from . import data, recipes, train  # noqa: E402


def cmd_data(args) -> int:
    from . import data, splits

    specs = [args.name] if args.name else data.available()
    if not specs:
        print(f"No data sets found under {config.data_root()} (set FKP_DATA_DIR).", file=sys.stderr)
        return 1
    report = []
    for spec in specs:
        try:
            faces = splits.load_faces(spec, None, progress=not args.json)
        except (data.DatasetNotFoundError, data.DataFormatError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        by_split = {s: faces.subset(splits.split_of(faces) == s) for s in splits.SPLITS}
        table = splits.split_table(by_split)
        report.append({
            "name": spec,
            "path": faces.source if spec.startswith("300w:") else str(data.dataset_dir(spec.split("/")[0])
                                                                       / "/".join(spec.split("/")[1:])),
            "faces": len(faces),
            "people": faces.num_people,
            "keypoints_per_face": faces.scheme.num_keypoints,
            "skipped": len(faces.skipped),
            "keypoint_warnings": len(faces.warnings),
            "splits": {s: {"faces": int(table.loc[s, "faces"]), "people": int(table.loc[s, "people"])}
                       for s in splits.SPLITS},
            "people_in_two_splits": int(table.attrs["people_in_two_splits"]),
        })
    if args.json:
        print(json.dumps(report if len(report) > 1 or not args.name else report[0], indent=2))
    else:
        print(f"data root: {config.data_root()}")
        for r in report:
            sp = ", ".join(f"{s} {v['faces']} faces / {v['people']} people" for s, v in r["splits"].items())
            print(f"{r['name']:<20} {r['faces']:>6} faces {r['people']:>6} people {r['keypoints_per_face']:>3} "
                  f"keypoints   [{sp}]   {r['path']}")
            if r["skipped"]:
                print(f"{'':<20} {r['skipped']} unreadable file(s) skipped")
    return 0


PREDICT_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _predict_inputs(paths) -> list:
    """Files as given; folders expanded to the images they hold (recursively, sorted)."""
    from pathlib import Path

    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in PREDICT_SUFFIXES)
        else:
            out.append(p)
    return out


def cmd_predict(args) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from . import detect, plots, predict

    inputs = _predict_inputs(args.paths)
    if not inputs:
        print("error: no images found in " + ", ".join(args.paths), file=sys.stderr)
        return 1
    overrides = {k: v for k, v in (("scale_factor", args.scale_factor), ("min_neighbors", args.min_neighbors),
                                   ("min_size", args.min_size), ("max_side", args.max_side)) if v is not None}
    if overrides.get("max_side") == 0:
        overrides["max_side"] = None                                  # 0: detect at full size
    params = detect.DetectorParams(**overrides)
    try:
        predictor = predict.Predictor(args.model, params,
                                      detect.UNCALIBRATED if args.no_calibration else None, runtime=args.runtime)
    except (FileNotFoundError, ValueError, OSError, NotImplementedError) as e:
        print(f"error: cannot load model {args.model!r}: {e}", file=sys.stderr)
        return 1
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results, failed, used = [], [], set()
    for path in tqdm(inputs, desc="facekp predict", unit="image", disable=args.quiet):
        try:
            pred = predictor(path)
        except (OSError, ValueError) as e:      # data.ImageReadError is a ValueError
            msg = str(e) if str(path) in str(e) else f"{path}: {e}"
            tqdm.write(f"skipped: {msg}", file=sys.stderr)
            failed.append({"file": str(path), "error": msg})
            continue
        stem = path.stem
        while stem in used:                      # two inputs with one name: keep both outputs
            stem += "_"
        used.add(stem)
        annotated = plots.draw_keypoints_cv(pred.image, pred.keypoints, pred.scheme, pred.boxes)
        out_path = out_dir / f"{stem}_keypoints.png"
        ok, buf = cv2_imencode(out_path.suffix, annotated)
        if ok:
            buf.tofile(str(out_path))
        record = pred.to_dict()
        record["annotated"] = str(out_path)
        if args.json:
            (out_dir / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
        results.append(record)
        if not args.json and not args.quiet:
            tqdm.write(f"{path}: {len(pred)} face(s), {pred.timings['total']:.0f} ms -> {out_path}")
    if args.json:
        print(json.dumps({"model": predictor.model.name, "runtime": predictor.model.runtime, "images": results,
                          "failed": failed}, indent=2))
    else:
        print(f"{len(results)} image(s) done, {sum(r['num_faces'] for r in results)} face(s); "
              f"{len(failed)} failed; outputs in {out_dir}", file=sys.stderr)
    return 1 if failed else 0


def cv2_imencode(suffix: str, rgb):
    import cv2

    return cv2.imencode(suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def cmd_evaluate(args) -> int:
    from . import data, evaluate, predict

    try:
        model = predict.load_keypoint_model(args.model, warm_up=False, runtime=args.runtime)
        result = evaluate.evaluate(model, args.data, split=args.split, max_faces=args.max_faces,
                                   timing=not args.no_timing, progress=not args.json)
    except (FileNotFoundError, ValueError, OSError, NotImplementedError, data.DatasetNotFoundError,
            data.DataFormatError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    result["model_path"] = getattr(model.model, "source_path", args.model)
    report = evaluate.report_json(result)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['model']} on {report['data']} ({report['split']}): {report['faces']} faces")
        print(f"  NME {report['nme']:.2f} % (normalised by the {report['normaliser']}), "
              f"RMSE {report['rmse_px96']:.2f} px at 96x96")
        print(f"  AUC@0.08 {report['auc08']:.2f} %, failures >0.08 {report['fail08']:.2f} %, "
              f">0.10 {report['fail10']:.2f} %")
        if "ms_per_face" in report:
            print(f"  speed: {report['latency_ms']:.1f} ms for one face, {report['throughput_ips']:.0f} faces/s "
                  f"in batches ({report['ms_per_face']:.2f} ms/face)")
    return 0


def cmd_export(args) -> int:
    from . import data, export

    try:
        path = export.export_int8(args.model, max_faces=args.max_faces)
    except (FileNotFoundError, ValueError, OSError, NotImplementedError, data.DatasetNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.model}: int8 model written to {path}")
    return 0


def cmd_calibrate(args) -> int:
    from . import data, detect

    try:
        if args.fit:
            cal = detect.fit_calibration(args.specs or detect.DEFAULT_SPECS, max_faces=args.max_faces)
        else:
            cal = detect.load_calibration(args.out)
    except (FileNotFoundError, ValueError, data.DataFormatError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(detect.calibration_summary(cal))
    if args.fit:
        print(f"wrote {detect.save_calibration(cal, args.out)}")
    return 0


def cmd_download(args) -> int:
    from . import data

    try:
        folder = data.download(args.name, url=args.url)
    except (data.DatasetNotFoundError, data.DataFormatError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.name}: ready in {folder}")
    return 0


def cmd_train(args) -> int:
    try:
        result = train.train(args.recipe, args.profile, args.out, restart=args.restart, progress=True)
    except (recipes.RecipeError, data.DatasetNotFoundError, data.DataFormatError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    s = result.summary
    print(f"{result.model_path}: best epoch {s['best_epoch']} of {s['epochs_run']} ({s['stopped_by']}), validation "
          f"NME {100 * s['best_val_nme']:.2f} %, {s['train_seconds'] / 60:.1f} min")
    return 0


def cmd_table(args) -> int:
    try:
        table = train.experiments_table(args.runs)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"error: {e} (each RUN must be a finished run folder with summary.json)", file=sys.stderr)
        return 1
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
    print(table.to_string(index=False))
    return 0


def cmd_readme(args) -> int:
    text = train.models_readme()
    (config.MODELS_DIR / "README.md").write_text(text)
    print(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facekp", description="Facial keypoint detection: data, evaluation, "
                                     "prediction.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="list the data sets found, with faces, people and split sizes")
    p.add_argument("name", nargs="?", help="a data set: youtube-faces-68, 300w/afw, 300w/helen-train, kaggle, "
                   "300w:PATH")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("predict", help="detect faces and their keypoints in photographs; write annotated images")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of images")
    p.add_argument("--model", default="lenet", help="lenet, resnet50 or a .keras file (default: lenet)")
    p.add_argument("--out", default="predictions", help="folder for annotated images and JSON (default: "
                   "./predictions)")
    p.add_argument("--json", action="store_true", help="write <name>.json per image and print all results as JSON")
    # detector defaults live in helpers.detect.DetectorParams; an option given here overrides one field
    p.add_argument("--scale-factor", type=float, help="Haar cascade scaleFactor (default 1.1)")
    p.add_argument("--min-neighbors", type=int, help="Haar cascade minNeighbors (default 5)")
    p.add_argument("--min-size", type=float, help="smallest face as a fraction of the detection image's "
                   "shorter side (default 0.15; lower it for small faces in group photos)")
    p.add_argument("--max-side", type=int, help="detect on a copy downscaled to this longer side "
                   "(0: full size; default 400)")
    p.add_argument("--no-calibration", action="store_true", help="crop the raw detector boxes (the seed's "
                   "framing; for comparison only)")
    p.add_argument("--runtime", default="auto", choices=["auto", "keras", "onnx", "int8"],
                   help="forward pass: auto (default: with an int8 export, the faster of it and the float ONNX "
                   "graph; else Keras), keras, onnx, int8")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="accuracy and speed of a trained model on a data set split")
    p.add_argument("--model", default="resnet50", help="lenet, resnet50 or a .keras file (default: resnet50)")
    p.add_argument("--data", required=True, metavar="SPEC", help="youtube-faces-68, 300w/afw, 300w/helen-train "
                   "(its saved identity-disjoint split) or 300w:PATH (every image + .pts pair of a folder)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="split of a named data set "
                   "(default: test; ignored for 300w:PATH)")
    p.add_argument("--max-faces", type=int, default=None, help="read at most this many faces")
    p.add_argument("--no-timing", action="store_true", help="skip the speed measurement")
    p.add_argument("--runtime", default="keras", choices=["auto", "keras", "onnx", "int8"],
                   help="forward pass: the Keras graph (default), its ONNX export, the int8 export, or auto")
    p.add_argument("--json", action="store_true", help="print one JSON object (NME, failure rates, AUC in %%)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="quantize a trained model to int8 ONNX for fast CPU inference")
    p.add_argument("model", help="lenet, resnet50 or a .keras file")
    p.add_argument("--max-faces", type=int, default=256, help="training faces used to calibrate the int8 "
                   "ranges (default 256)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("calibrate", help="show the Haar-box → training-crop calibration; --fit refits it")
    p.add_argument("--fit", action="store_true", help="fit it on the specs' train splits and write it")
    p.add_argument("--specs", nargs="+", help="data sets to fit on (default: youtube-faces-68 300w/helen-train)")
    p.add_argument("--max-faces", type=int, default=None, help="read at most this many faces per data set")
    p.add_argument("--out", default=None, help="calibration file (default: helpers/calibration.json)")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("train", help="train a recipe (or an experiment) from scratch; resumes an interrupted run")
    p.add_argument("recipe", help="a recipe file, e.g. recipes/lenet.toml or experiments/lenet_flip.toml")
    p.add_argument("--profile", default=None, help="smoke | quick | full: scales faces read and epochs "
                   "(default: $FKP_PROFILE, else quick)")
    p.add_argument("--out", default=None, help="run folder (default: models/runs/<recipe>-<profile>); the "
                   "committed models are trained with --profile full --out models/<recipe>")
    p.add_argument("--restart", action="store_true", help="discard an earlier run in the folder and start afresh")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("readme", help="regenerate models/README.md from the committed run folders (measures them)")
    p.set_defaults(func=cmd_readme)

    p = sub.add_parser("table", help="collect finished runs' summaries into one table (the chapters' ablations)")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders holding summary.json")
    p.add_argument("--out", help="also write the table as CSV here")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("download", help="fetch a data set into the data root (FKP_DATA_DIR or data/)")
    p.add_argument("name", choices=["youtube-faces-68", "kaggle", "300w"])
    p.add_argument("--url", help="another location of the same archive (e.g. a mirror or a file:// URL)")
    p.set_defaults(func=cmd_download)

    # Further subcommands register here: each is a small `cmd_*` function calling its module.
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("predict", "evaluate", "export", "train", "table", "readme"):
        config.import_keras()        # quietly, before any module imports it
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
