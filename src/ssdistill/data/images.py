"""Reading image files as the user sees them, with errors that name the file.

Every source (folders, lists, WebDataset shards) decodes through ``decode`` and measures through ``displayed_size``:

- EXIF orientation is applied first (transposed as ``PIL.ImageOps.exif_transpose`` does): a portrait photo stored
  sideways with an orientation tag reaches the models upright, and its size is the displayed one (width and height
  swapped for orientations 5-8). The orientation is read from what precedes the pixels (a PNG's eXIf chunk before its
  image data, as the PNG specification places it), so measuring an image stays a header read; a PNG whose EXIF block
  follows its pixels, and a garbled EXIF block, count as none (orientation 1), silently.
- Colour profiles (ICC) are not applied, as in the torchvision / timm pipelines the teachers were trained with.
- Every mode becomes 8-bit RGB by its value range, never by clipping: 1-bit, L, P and CMYK through PIL; 16-bit
  greyscale (``I;16``, ``I;16B``, ``I;16L``) and 32-bit integer ``I`` images are read as 0-65535 and scaled to 0-255
  (``round(v / 257)``; PIL's own ``convert("RGB")`` clips them at 255, so a 16-bit PNG would come out nearly white);
  floating ``F`` images are read as 0-1 when their maximum is at most 1 (scaled by 255), else as 0-255 (clipped).
  16-bit RGB(A) PNGs arrive from PIL already as 8-bit ``RGB``/``RGBA`` (their high byte).
- Transparency (RGBA, LA, PA, P with a transparent colour, La/RGBa) is composited on white, as an image viewer on a
  white page shows it; dropping the alpha channel instead would show what the transparent pixels happen to store,
  often black, so a black drawing on a transparent background would become all black.
- Animated GIF / WebP / APNG: the first frame.
- An image with more pixels than PIL considers safe to decode (``Image.MAX_IMAGE_PIXELS``, about 89 million: PIL's
  decompression-bomb warning threshold) is refused with a one-line DataError, or skipped with data.skip_corrupt=true.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import re
import struct
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, UnidentifiedImageError, features

from ssdistill.errors import DataError

IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".mpo",
    ".png",
    ".apng",
    ".bmp",
    ".webp",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
    ".pbm",
    ".pnm",
    ".gif",
) + ((".avif",) if features.check("avif") else ())
# photo formats this PIL cannot read: files with these extensions are named in a warning rather than silently left out
UNREADABLE_EXTENSIONS = (".heic", ".heif", ".jxl", ".cr2", ".cr3", ".nef", ".arw", ".dng", ".orf", ".rw2", ".raf", ".svg") + (
    () if features.check("avif") else (".avif",)
)
ORIENTATION = 0x0112  # the EXIF orientation tag
SKIP_HINT = "set data.skip_corrupt=true to skip unreadable images"
# what PIL raises on a damaged file besides OSError (truncated headers, bad EXIF blocks, broken palettes)
DECODE_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError)

log = logging.getLogger(__name__)


@contextlib.contextmanager
def read_errors(file: str | Path | IO[bytes], name: str) -> Iterator[None]:
    """PIL's failures inside the block as one-line DataErrors naming ``name``: an unreadable file, or one too large to
    decode safely (PIL's decompression-bomb warning is an error here, not a line in the log). Only for PIL's own reading
    (``Image.open``, ``image.load()``): around other code the broad catch would call a bug an unreadable image (and
    data.skip_corrupt=true would then leave images out without a word about the bug)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(found.group(1)):,}" if found else "too many"
        raise DataError(
            f"image {name} is too large to decode safely ({pixels} pixels, over PIL's limit of {Image.MAX_IMAGE_PIXELS:,}); "
            f"downscale it or remove it, or {SKIP_HINT}"
        ) from None
    except DECODE_ERRORS as exc:
        if _empty(file):
            raise DataError(f"image {name} is an empty file (0 bytes); replace or delete it, or {SKIP_HINT}") from None
        reason = "not in an image format PIL can identify" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise DataError(f"cannot read image {name} ({reason}); replace or delete it, or {SKIP_HINT}") from None


@contextlib.contextmanager
def open_image(file: str | Path | IO[bytes], name: str) -> Iterator[Image.Image]:
    """``Image.open`` whose failures are one-line DataErrors naming ``name`` (``read_errors``); an error raised in the
    caller's block passes unchanged, so decode the pixels inside ``read_errors`` too. A garbled EXIF block is read as
    none, as viewers do, not warned about on every load."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(Possibly )?[Cc]orrupt EXIF|Metadata Warning", category=UserWarning)
        with read_errors(file, name):
            image = Image.open(file)
        with image:
            yield image


def _empty(file: str | Path | IO[bytes]) -> bool:
    if isinstance(file, io.BytesIO):
        return file.getbuffer().nbytes == 0
    try:
        return isinstance(file, (str, Path)) and Path(file).stat().st_size == 0
    except OSError:
        return False


def to_rgb(image: Image.Image) -> Image.Image:
    """An image of any PIL mode as 8-bit RGB (see the module docstring for each mode)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image)
        if mode == "F":
            finite = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
            scale = 255.0 if finite.size and finite.max() <= 1.0 else 1.0
            grey = np.clip(np.rint(finite * scale), 0, 255)
        else:
            grey = np.rint(np.clip(values.astype(np.float64), 0, 65535) / 257)
        return Image.fromarray(grey.astype(np.uint8), "L").convert("RGB")
    if mode == "La":  # premultiplied alpha: PIL converts La only to LA (or La)
        image, mode = image.convert("LA"), "LA"
    if mode in ("RGBa", "LA", "PA") or (mode == "P" and "transparency" in image.info) or (mode in ("L", "RGB") and "transparency" in image.info):
        image, mode = image.convert("RGBA"), "RGBA"
    if mode == "RGBA":
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image).convert("RGB")
    return image.convert("RGB")  # 1, L, P, CMYK, YCbCr, HSV, LAB ...


# EXIF orientation -> the transposition that shows the image upright (as PIL.ImageOps.exif_transpose)
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation from what the file holds before its pixels, 1 (as stored) when the EXIF block is missing,
    garbled or holds no valid orientation. PIL's base ``getexif`` reads the header only; a PNG's own ``getexif`` decodes
    every pixel when the header has no eXIf chunk (to look for one after the image data), which would make measuring a
    PNG cost a full decode."""
    try:
        orientation = Image.Image.getexif(image).get(ORIENTATION, 1)
    except DECODE_ERRORS:
        return 1
    return orientation if orientation in UPRIGHT else 1


def decode(file: str | Path | IO[bytes], name: str) -> Image.Image:
    """Decode the first frame fully, upright (EXIF orientation applied) and as 8-bit RGB; a damaged file or one too
    large raises DataError naming ``name``."""
    with open_image(file, name) as image:
        orientation = _orientation(image)  # before the pixels are read, so it is the one ``displayed_size`` sees
        with read_errors(file, name):
            image.load()
        if orientation in UPRIGHT:
            return to_rgb(image.transpose(UPRIGHT[orientation]))
        return to_rgb(image)


def displayed_size(file: str | Path | IO[bytes], name: str) -> tuple[int, int]:
    """(width, height) as ``decode`` returns the image, from the header alone (no pixel is decoded): swapped for EXIF
    orientations 5-8 (rotated by 90 degrees)."""
    with open_image(file, name) as image:
        width, height = image.size
        return (height, width) if _orientation(image) in (5, 6, 7, 8) else (width, height)


def load_rgb(path: str | Path) -> Image.Image:
    """The image file at ``path`` as ``decode`` returns it."""
    return decode(path, str(path))


def is_image_file(path: Path) -> bool:
    """An image by its extension (any case), not hidden (``.DS_Store``, ``._photo.jpg`` of macOS copies)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


_UNREADABLE: dict[str, list[int]] = {}  # identity of a source's images -> its unreadable positions (decoded once)


def keep_readable(identity: str, count: int, load: Callable[[int], object], name: Callable[[int], str]) -> tuple[list[int], list[int]]:
    """Decode each of ``count`` images once (``load(i)``) and return the positions of the readable and of the unreadable
    images, with one warning naming the unreadable ones (``name(i)``). ``identity`` is a digest of what identifies the
    images' bytes (``files_identity``, or a set of shards' paths, sizes and modification times): the same images opened
    again in this process (a split is opened several times a run) are not decoded again, nor warned about twice."""
    if identity not in _UNREADABLE:
        bad = []
        for position in range(count):
            try:
                load(position)
            except DataError:
                bad.append(position)
        _UNREADABLE[identity] = bad
        if bad:
            shown = ", ".join(name(p) for p in bad[:3])
            log.warning("skipped %d unreadable image(s) (data.skip_corrupt=true): %s%s", len(bad), shown, " ..." if len(bad) > 3 else "")
    unreadable = set(_UNREADABLE[identity])
    return [p for p in range(count) if p not in unreadable], sorted(unreadable)


def files_identity(paths: Iterable[Path]) -> str:
    """The ``keep_readable`` identity of image files: their resolved paths, sizes and modification times, digested file
    by file (nothing the size of the whole list is built)."""
    digest = hashlib.sha1(b"files\n")
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
