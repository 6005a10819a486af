"""Every image a user can open reaches the models as they see it: upright (EXIF orientation), as 8-bit RGB scaled from
its own value range (16-bit greyscale is not clipped), transparency on white, the first frame of an animation, and an
image too large to decode safely refused in one line or skipped. Each image is built with PIL (or by hand, for the PNG
kinds PIL cannot write) in tmp_path, read through the real sources (folder, list, shard), and its pixels checked
against values worked out by hand."""

import io
import struct
import tarfile
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from ssdistill.data.datasets import FolderImages, ListImages, ShardImages, open_images
from ssdistill.data.images import decode, displayed_size, to_rgb
from ssdistill.errors import DataError

WHITE, RED, BLUE = (255, 255, 255), (255, 0, 0), (0, 0, 255)


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, rows) -> bytes:
    """A PNG written by hand (PIL cannot write 16-bit RGB): ``rows`` is the raw bytes of each row, or one callable
    giving the same row for every line (a huge image costs no memory)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    packer = zlib.compressobj()
    body = b"".join(packer.compress(b"\x00" + (rows() if callable(rows) else rows[y])) for y in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image).astype(int)


def with_orientation(image: Image.Image, path, orientation: int, **save) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, exif=exif.tobytes(), **save)


def halves() -> Image.Image:
    """16 wide, 8 high: left half red, right half blue."""
    image = Image.new("RGB", (16, 8), RED)
    image.paste(BLUE, (8, 0, 16, 8))
    return image


def test_a_sideways_stored_photo_reaches_the_models_upright_with_its_displayed_size(tmp_path):
    """Orientation 6 (a phone held upright: the camera stores the frame turned, 'rotate 90 CW to display'): the stored
    left half (red) becomes the displayed top half. JPEG for the realistic case (tolerance for its compression)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    with_orientation(halves(), folder / "portrait.jpg", 6, quality=95)
    source = FolderImages(folder)
    image = source.load(0)
    assert image.size == (8, 16) and source.size(0) == (8, 16)
    assert np.abs(pixels(image)[3, 4] - RED).max() < 20 and np.abs(pixels(image)[12, 4] - BLUE).max() < 20


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_pils_exif_transpose_and_size_agrees(tmp_path, orientation):
    """Lossless PNG with an eXIf chunk: the decoded pixels equal PIL's exif_transpose of the stored image, and size()
    (read from the header, used to draw crop boxes for the augmentation bank) equals the decoded image's size."""
    stored = Image.fromarray(np.arange(6 * 4 * 3, dtype=np.uint8).reshape(4, 6, 3))  # 6 wide, 4 high, all distinct
    path = tmp_path / "o.png"
    with_orientation(stored, path, orientation)
    with Image.open(path) as reference:
        expected = np.asarray(ImageOps.exif_transpose(reference).convert("RGB"))
    out = decode(path, str(path))
    assert np.array_equal(np.asarray(out), expected)
    assert displayed_size(path, str(path)) == out.size == ((4, 6) if orientation >= 5 else (6, 4))
    if orientation == 8:  # 'rotate 90 CCW to display' (PIL's ROTATE_90): the stored top-right pixel lands top-left
        assert tuple(out.getpixel((0, 0))) == tuple(stored.getpixel((5, 0)))


def test_a_garbled_exif_block_reads_as_no_orientation_without_warnings(tmp_path):
    import warnings

    path = tmp_path / "garbled.jpg"
    halves().save(path, exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff", quality=95)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image, size = decode(path, "x"), displayed_size(path, "x")
    assert image.size == size == (16, 8) and np.abs(pixels(image)[4, 2] - RED).max() < 20


def test_orientation_applies_to_list_and_shard_images_too(tmp_path):
    with_orientation(halves(), tmp_path / "p.png", 6)
    (tmp_path / "list.txt").write_text("p.png\n")
    shard = tmp_path / "s-0.tar"
    with tarfile.open(shard, "w") as tar:
        data = (tmp_path / "p.png").read_bytes()
        info = tarfile.TarInfo("k1.png")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    for source in (ListImages(tmp_path / "list.txt"), ShardImages(str(shard))):
        image = source.load(0)
        assert source.size(0) == image.size == (8, 16)
        assert tuple(image.getpixel((4, 3))) == RED and tuple(image.getpixel((4, 12))) == BLUE


def saved(image: Image.Image, path, **save) -> Image.Image:
    image.save(path, **save)
    return decode(path, str(path))


def test_greyscale_palette_and_one_bit_images(tmp_path):
    grey = Image.new("L", (2, 1))
    grey.putdata([0, 100])
    assert pixels(saved(grey, tmp_path / "l.png")).tolist() == [[[0, 0, 0], [100, 100, 100]]]
    bits = Image.new("1", (2, 1))
    bits.putpixel((1, 0), 1)
    assert pixels(saved(bits, tmp_path / "b.png")).tolist() == [[[0, 0, 0], [255, 255, 255]]]
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putdata([1, 0])
    assert pixels(saved(palette, tmp_path / "p.png")).tolist() == [[list(BLUE), list(RED)]]
    # palette index 0 transparent: shown on white
    assert pixels(saved(palette, tmp_path / "pt.png", transparency=0)).tolist() == [[list(BLUE), list(WHITE)]]
    assert pixels(saved(palette, tmp_path / "pt.gif", transparency=0)).tolist() == [[list(BLUE), list(WHITE)]]


def test_transparency_is_composited_on_white(tmp_path):
    """A black drawing on a transparent background stays a black drawing on white (dropping alpha would make the
    background the stored colour of its transparent pixels: here black, the whole image black)."""
    rgba = Image.new("RGBA", (4, 1))
    rgba.putdata([(0, 0, 0, 0), (0, 0, 0, 255), (10, 20, 30, 255), (100, 0, 200, 128)])
    out = pixels(saved(rgba, tmp_path / "a.png"))
    assert out[0, :3].tolist() == [list(WHITE), [0, 0, 0], [10, 20, 30]]
    # half transparent: (c * 128 + 255 * 127) / 255 -> 177, 127, 227 (+-1 for rounding)
    assert np.abs(out[0, 3] - [177, 127, 227]).max() <= 1
    la = Image.new("LA", (3, 1))
    la.putdata([(100, 0), (100, 255), (100, 128)])
    out = pixels(saved(la, tmp_path / "la.png"))
    assert out[0, :2].tolist() == [list(WHITE), [100, 100, 100]] and np.abs(out[0, 2] - 177).max() <= 1
    grey_key = Image.new("L", (2, 1))
    grey_key.putdata([7, 50])
    assert pixels(saved(grey_key, tmp_path / "tl.png", transparency=7)).tolist() == [[list(WHITE), [50, 50, 50]]]


def test_cmyk_becomes_rgb(tmp_path):
    cmyk = Image.new("CMYK", (3, 1))
    cmyk.putdata([(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 255)])
    assert pixels(saved(cmyk, tmp_path / "c.tif")).tolist() == [[list(WHITE), [0, 255, 255], [0, 0, 0]]]


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    """0, 257, 32896, 65535 (that is 0, 1, 128, 255 times 257) -> 0, 1, 128, 255; PIL's convert("RGB") would give
    0, 255, 255, 255."""
    values = [0, 257, 32896, 65535]
    expected = [[[v, v, v] for v in (0, 1, 128, 255)]]
    i16 = Image.fromarray(np.array([values], dtype=np.uint16))
    assert i16.mode == "I;16" and pixels(saved(i16, tmp_path / "g16.png")).tolist() == expected
    big_endian = Image.frombytes("I;16B", (4, 1), struct.pack(">4H", *values))
    assert pixels(saved(big_endian, tmp_path / "g16b.tif")).tolist() == expected
    assert pixels(to_rgb(big_endian)).tolist() == expected
    by_hand = tmp_path / "hand16.png"  # a 16-bit greyscale PNG as another program writes it
    by_hand.write_bytes(png_bytes(4, 1, 16, 0, [struct.pack(">4H", *values)]))
    assert pixels(decode(by_hand, "x")).tolist() == expected
    int32 = Image.fromarray(np.array([values + [70000, -5]], dtype=np.int32))  # 'I': read as 0-65535, outside clipped
    assert int32.mode == "I"
    assert pixels(saved(int32, tmp_path / "i.tif")).tolist() == [expected[0] + [[255] * 3, [0] * 3]]


def test_floating_point_images(tmp_path):
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))  # 0-1: times 255, 127.5 rounds to even 128
    assert pixels(saved(unit, tmp_path / "f.tif")).tolist() == [[[0] * 3, [128] * 3, [255] * 3]]
    wide = Image.fromarray(np.array([[0.0, 100.0, 300.0]], dtype=np.float32))  # above 1: read as 0-255, clipped
    assert pixels(to_rgb(wide)).tolist() == [[[0] * 3, [100] * 3, [255] * 3]]


def test_sixteen_bit_colour_png_arrives_as_its_high_byte(tmp_path):
    """PIL opens a 16-bit RGB PNG as 8-bit RGB itself, keeping each sample's high byte (0x1280 -> 0x12 = 18)."""
    path = tmp_path / "rgb16.png"
    path.write_bytes(png_bytes(2, 1, 16, 2, [struct.pack(">6H", 0, 32896, 65535, 257, 0x1280, 0xFFFF)]))
    assert pixels(decode(path, "x")).tolist() == [[[0, 128, 255], [1, 18, 255]]]
    path.write_bytes(png_bytes(1, 1, 16, 6, [struct.pack(">4H", 0, 0, 0, 0)]))  # 16-bit RGBA, transparent: white
    assert pixels(decode(path, "x")).tolist() == [[list(WHITE)]]


@pytest.mark.parametrize("suffix", [".gif", ".webp", ".png"])
def test_an_animation_gives_its_first_frame(tmp_path, suffix):
    frames = [Image.new("RGB", (4, 4), RED), Image.new("RGB", (4, 4), BLUE)]
    path = tmp_path / f"anim{suffix}"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0, **({"lossless": True} if suffix == ".webp" else {}))
    with Image.open(path) as check:
        assert check.n_frames == 2
    assert np.abs(pixels(decode(path, "x"))[2, 2] - RED).max() <= 2


def huge_png(path, width: int = 10_000, height: int = 9_000) -> None:
    """90 million 1-bit pixels (over PIL's 89,478,485-pixel limit) in a few kilobytes."""
    row = bytes(width // 8)
    path.write_bytes(png_bytes(width, height, 1, 0, lambda: row))


def test_an_image_too_large_to_decode_is_one_line_or_skipped(tmp_path, caplog):
    folder = tmp_path / "big"
    folder.mkdir()
    huge_png(folder / "huge.png")
    Image.new("RGB", (8, 8), RED).save(folder / "small.png")
    assert (folder / "huge.png").stat().st_size < 100_000
    source = FolderImages(folder)
    position = source.paths.index(folder / "huge.png")
    for call in (source.load, source.size):
        with pytest.raises(DataError) as info:
            call(position)
        message = str(info.value)
        assert message == (
            f"image {folder / 'huge.png'} is too large to decode safely (90,000,000 pixels, over PIL's limit of "
            "89,478,485); downscale it or remove it, or set data.skip_corrupt=true to skip unreadable images"
        )
    skipping = FolderImages(folder, skip_corrupt=True)
    assert skipping.paths == [folder / "small.png"] and skipping.skipped == [folder / "huge.png"]
    assert "huge.png" in caplog.text


def test_empty_and_fake_image_files_are_named(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("this is text, not a JPEG")
    with pytest.raises(DataError, match=r"empty.jpg is an empty file \(0 bytes\); replace or delete it, or set data.skip_corrupt=true"):
        decode(tmp_path / "empty.jpg", str(tmp_path / "empty.jpg"))
    with pytest.raises(DataError) as info:
        decode(tmp_path / "notes.jpg", str(tmp_path / "notes.jpg"))
    assert str(info.value) == (
        f"cannot read image {tmp_path / 'notes.jpg'} (not in an image format PIL can identify); replace or "
        "delete it, or set data.skip_corrupt=true to skip unreadable images"
    )
    Image.new("RGB", (4, 4)).save(tmp_path / "ok.JPG")  # an upper-case extension is an image
    source = open_images(str(tmp_path), skip_corrupt=True)
    assert [p.name for p in source.paths] == ["ok.JPG"] and sorted(p.name for p in source.skipped) == ["empty.jpg", "notes.jpg"]


def png_chunks(data: bytes) -> list[bytes]:
    """The chunk types of a PNG file, in file order."""
    kinds, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kinds.append(data[at + 4 : at + 8])
        at += 12 + length
    return kinds


def with_chunk_after_pixels(data: bytes, kind: bytes, payload: bytes) -> bytes:
    """``data`` (a PNG) with one more chunk between its last IDAT and IEND."""
    chunk = struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    return data[:-12] + chunk + data[-12:]


def test_measuring_a_png_reads_its_header_only_and_agrees_with_decoding(tmp_path, monkeypatch):
    """The augmentation bank and the export's size census measure every image: a PNG's size (EXIF orientation applied)
    comes from its header, no pixel decoded (PIL's PNG getexif would decode the whole image to look for an EXIF block
    after the pixels). decode and displayed_size read the orientation from the same place: an eXIf chunk before the
    pixels (where PIL writes it) turns both; one after the pixels turns neither."""
    from PIL import ImageFile

    plain, turned, late = tmp_path / "plain.png", tmp_path / "turned.png", tmp_path / "late.png"
    halves().save(plain)
    with_orientation(halves(), turned, 6)
    assert png_chunks(turned.read_bytes()).index(b"eXIf") < png_chunks(turned.read_bytes()).index(b"IDAT")
    exif = Image.Exif()
    exif[0x0112] = 6
    late.write_bytes(with_chunk_after_pixels(plain.read_bytes(), b"eXIf", exif.tobytes()))
    assert png_chunks(late.read_bytes())[-2:] == [b"eXIf", b"IEND"]

    loads, load = [], ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self) or load(self))
    sizes = {path.name: displayed_size(path, str(path)) for path in (plain, turned, late)}
    assert FolderImages(tmp_path).size(0) == (16, 8)  # late.png, through a source
    assert sizes == {"plain.png": (16, 8), "turned.png": (8, 16), "late.png": (16, 8)} and loads == []
    for path in (plain, turned, late):
        image = decode(path, str(path))
        assert image.size == sizes[path.name]
        assert tuple(image.getpixel((2, 2))) == RED  # upright: the stored left half is the displayed top half
        assert tuple(image.getpixel((image.width - 3, image.height - 3))) == BLUE
    assert loads  # the count sees decoding


def test_a_bug_after_reading_is_not_called_an_unreadable_image(tmp_path, monkeypatch):
    """Only PIL's own reading (Image.open, load) becomes 'cannot read image ...': an error in the code that converts the
    pixels is raised as itself, and data.skip_corrupt=true does not silently leave the images out over it."""
    import ssdistill.data.images as images

    Image.new("RGB", (4, 4), RED).save(tmp_path / "ok.png")

    def broken(image):
        raise KeyError("a bug in the conversion")

    monkeypatch.setattr(images, "to_rgb", broken)
    with pytest.raises(KeyError, match="a bug in the conversion"):
        decode(tmp_path / "ok.png", "ok.png")
    with pytest.raises(KeyError, match="a bug in the conversion"):
        FolderImages(tmp_path, skip_corrupt=True)


def test_premultiplied_alpha_is_composited_on_white():
    """La and RGBa (alpha premultiplied into the colour): a stored 50 at alpha 128 shows 50 + 255 * 127 / 255 = 177."""
    la = Image.new("La", (2, 1))
    la.putdata([(50, 128), (0, 0)])
    assert np.abs(pixels(to_rgb(la)) - [[[177] * 3, list(WHITE)]]).max() <= 1
    rgba = Image.new("RGBa", (1, 1))
    rgba.putdata([(50, 0, 128, 128)])
    assert np.abs(pixels(to_rgb(rgba)) - [[[177, 127, 255]]]).max() <= 1
