"""``facekp``: the project's command line. Thin: it parses arguments and calls the modules that do the work.

    facekp data [NAME] [--json]          data sets found, faces, people, keypoints, split sizes
"""
from __future__ import annotations

import argparse
import json
import sys

from . import config


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facekp", description="Facial keypoint detection: data, evaluation, "
                                     "prediction.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="list the data sets found, with faces, people and split sizes")
    p.add_argument("name", nargs="?", help="a data set: youtube-faces-68, 300w/afw, 300w/helen-train, kaggle, "
                   "300w:PATH")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_data)

    # Further subcommands register here: each is a small `cmd_*` function calling its module.
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
