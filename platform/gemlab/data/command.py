"""``gemlab data``: generate domains, and inspect a collection on disk.

    gemlab data synth --out data/synth-uodb          # miniature multi-domain detection benchmark
    gemlab data digits --out data/digits             # DomainBed-style digit domains (scikit-learn's digits)
    gemlab data stats data/synth-uodb                # per-domain counts, label spaces, sampling weights
    gemlab data manifest data/synth-uodb             # one Parquet row per image

``stats`` and ``manifest`` read a ``gemlab-data.yaml`` index (see
docs/datasets.md); with ``--lenient`` bad records are skipped and listed
instead of stopping the read.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from gemlab.files import check_file_destination


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    synth = actions.add_parser("synth", help="write the synth-uodb detection benchmark")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--image-size", type=int, default=128)
    synth.add_argument("--scale", type=float, default=1.0, help="multiplies every domain's image count")
    synth.add_argument("--workers", type=int, default=2)
    digits = actions.add_parser("digits", help="write DomainBed-style digit domains")
    digits.add_argument("--out", type=Path, required=True)
    digits.add_argument("--seed", type=int, default=0)
    digits.add_argument("--image-size", type=int, default=28)
    for name, text in (("stats", "per-domain counts, label spaces, weights"), ("manifest", "one row per image")):
        reader = actions.add_parser(name, help=text)
        reader.add_argument("collection", type=Path, help="a folder holding gemlab-data.yaml, or the file")
        reader.add_argument("--lenient", action="store_true", help="skip bad records and report them")
        if name == "stats":
            reader.add_argument("--alpha", type=float, help="sampling weights p_d ∝ n_d^alpha (default: the index's)")
        else:
            reader.add_argument("--out", type=Path, help="default: COLLECTION/manifest.parquet")


def _report_skipped(skipped: list[str]) -> None:
    if skipped:
        print(f"skipped {len(skipped)} bad record(s):", file=sys.stderr)
        for line in skipped:
            print(f"  {line}", file=sys.stderr)


def _stats(args: argparse.Namespace) -> None:
    from gemlab.data.collection import load_collection
    from gemlab.data.mixture import DomainMixture
    from gemlab.data.records import SPLITS

    mixture, skipped = load_collection(args.collection, lenient=args.lenient)
    if args.alpha is not None:
        mixture = DomainMixture(mixture.domains, args.alpha)
    print(
        f"{len(mixture.domains)} domains, sampling weights p_d ∝ n_d^{mixture.alpha:g}, "
        f"{len(mixture.labels.names)} categories in the unified label space"
    )
    print(f"{'domain':<16} {'task':<14} {'train':>7} {'val':>6} {'calib':>6} {'test':>6} {'weight':>7}  categories")
    for domain, weight in zip(mixture.domains, mixture.weights, strict=True):
        train, *others = (len(domain.splits.get(split, ())) for split in SPLITS)
        names = ", ".join(c.name for c in domain.categories)
        counts = "".join(f" {count:>6}" for count in others)
        print(f"{domain.name:<16} {domain.task:<14} {train:>7}{counts} {weight:>7.4f}  {names}")
    _report_skipped(skipped)


def _manifest(args: argparse.Namespace) -> None:
    from gemlab.data.collection import load_collection
    from gemlab.data.manifest import write_manifest

    folder = args.collection if args.collection.is_dir() else args.collection.parent
    out = args.out or folder / "manifest.parquet"
    check_file_destination(out)  # before reading every annotation
    mixture, skipped = load_collection(args.collection, lenient=args.lenient)
    out = write_manifest(mixture, out)
    print(f"wrote {out} ({sum(len(s) for d in mixture.domains for s in d.splits.values())} images)")
    _report_skipped(skipped)


def _generate(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    if args.action == "synth":
        from gemlab.data.synth.uodb import generate_synth_uodb

        index = generate_synth_uodb(
            args.out, seed=args.seed, image_size=args.image_size, scale=args.scale, workers=args.workers
        )
    else:
        from gemlab.data.digits import generate_digits

        index = generate_digits(args.out, seed=args.seed, image_size=args.image_size)
    print(f"wrote {index} in {time.perf_counter() - start:.1f} s")


def run(args: argparse.Namespace) -> int:
    """Run one action; a DataError or OSError (named file, one line) reaches ``gemlab``'s main, which prints it."""
    {"synth": _generate, "digits": _generate, "stats": _stats, "manifest": _manifest}[args.action](args)
    return 0
