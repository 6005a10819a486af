"""Build the small Imagenette subset that ships with the repository (``data/imagenette_mini``).

Reads the Imagenette v2 tarball from ``../shared/data`` directly (no unpacking), draws a fixed,
seeded sample of images per class for ``train`` and ``val``, resizes them and writes JPEGs in the
ImageFolder layout. Re-running it reproduces the same files byte for byte.

    python scripts/make_demo_data.py --src ../shared/data/imagenette2_224_jpeg.tar.gz
"""

from __future__ import annotations

import argparse
import io
import random
import shutil
import tarfile
from collections import defaultdict
from pathlib import Path

from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path("../shared/data/imagenette2_224_jpeg.tar.gz"))
    parser.add_argument("--dst", type=Path, default=Path("data/imagenette_mini"))
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--val-per-class", type=int, default=50)
    parser.add_argument("--size", type=int, default=128, help="side of the square output images")
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.src.is_file():
        raise SystemExit(f"error: {args.src} not found; pass --src PATH to imagenette2_224_jpeg.tar.gz")

    per_split = {"train": args.train_per_class, "val": args.val_per_class}
    with tarfile.open(args.src, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile() and m.name.lower().endswith(".jpeg")}
        by_class: dict[tuple[str, str], list[str]] = defaultdict(list)
        for name in members:
            split, wnid, _ = name.split("/")
            by_class[(split, wnid)].append(name)
        if args.dst.exists():
            shutil.rmtree(args.dst)
        rng = random.Random(args.seed)
        for (split, wnid), names in sorted(by_class.items()):
            if split not in per_split:
                continue
            chosen = rng.sample(sorted(names), per_split[split])
            out_dir = args.dst / split / wnid
            out_dir.mkdir(parents=True, exist_ok=True)
            for name in sorted(chosen):
                data = tar.extractfile(members[name]).read()
                image = Image.open(io.BytesIO(data)).convert("RGB")
                image = image.resize((args.size, args.size), Image.Resampling.BICUBIC)
                image.save(out_dir / (Path(name).stem + ".jpg"), quality=args.quality)
    total = sum(1 for _ in args.dst.rglob("*.jpg"))
    size_mb = sum(p.stat().st_size for p in args.dst.rglob("*.jpg")) / 2**20
    print(f"wrote {total} images ({size_mb:.1f} MB) to {args.dst}")


if __name__ == "__main__":
    main()
