"""Reference statistics of the toy digits: features of the real images, with their provenance.

The real images are the dataset's own grey levels (``round(v · 255 / 16)``, see
:mod:`cmbench.zoo.toy.data`), so no generator-side quantisation is involved. Every ``pool`` row
is kept (1,797 at most) as the real set for precision/recall.

Run ``python -m cmbench.zoo.toy.reference --out reference_stats/toy-digits-all.npz`` (``--split
test`` for the held-out split) to write the shipped files with the shipped toy classifier.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cmbench.features.base import FeatureExtractor
from cmbench.metrics.reference import ReferenceStats, save_reference
from cmbench.zoo.toy.data import SPLITS, load_toy


def compute_toy_reference(extractor: FeatureExtractor, split: str = "all") -> ReferenceStats:
    """Statistics of every layer ``extractor`` has, over the real images of ``split``."""
    images, _ = load_toy(split)
    features = {k: v.numpy() for k, v in extractor.extract(images, extractor.layers).items()}
    meta = {
        **extractor.identity,
        "num_images": int(images.shape[0]),
        "resolution": list(images.shape[-2:]),
        "source": f"sklearn digits ({split}, {images.shape[0]} images)",
        "quantisation": "exact (dataset grey levels)",
    }
    keep = {"pool": images.shape[0]} if "pool" in features else None
    return ReferenceStats.from_features(features, meta, keep_features=keep)


def main(argv: list[str] | None = None) -> None:
    from cmbench.features.toy import ToyClassifierExtractor
    from cmbench.zoo.toy.classifier import DEFAULT_CLASSIFIER

    parser = argparse.ArgumentParser(prog="python -m cmbench.zoo.toy.reference", description="Write reference statistics of the toy digits under the toy classifier.")
    parser.add_argument("--out", type=Path, required=True, help=".npz file to write")
    parser.add_argument("--split", choices=SPLITS, default="all")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CLASSIFIER, help="toy classifier checkpoint (default: the shipped one)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.overwrite:
        parser.error(f"{args.out} already exists; pass --overwrite to replace it")
    stats = compute_toy_reference(ToyClassifierExtractor(args.checkpoint), args.split)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_reference(args.out, stats, overwrite=args.overwrite)
    print(f"wrote {args.out}: {stats.meta['source']}, extractor {stats.meta['extractor']} (sha256 {stats.meta['extractor_sha256']})")


if __name__ == "__main__":
    main()
