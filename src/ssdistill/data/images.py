"""Reading image files with errors that name the file."""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ssdistill.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

log = logging.getLogger(__name__)


def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image fully and return it as RGB; a corrupt or unreadable file raises DataError naming it."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"cannot read image {path} ({exc}); replace or delete it, or set data.skip_corrupt=true to skip unreadable images"
        ) from None


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def keep_readable(paths: list[Path]) -> tuple[list[int], list[Path]]:
    """Decode every file once; return the positions of readable ones and the unreadable paths."""
    good: list[int] = []
    bad: list[Path] = []
    for position, path in enumerate(paths):
        try:
            load_rgb(path)
        except DataError:
            bad.append(path)
        else:
            good.append(position)
    if bad:
        shown = ", ".join(str(p) for p in bad[:3])
        log.warning("skipped %d unreadable image(s) (data.skip_corrupt=true): %s%s", len(bad), shown, " ..." if len(bad) > 3 else "")
    return good, bad
