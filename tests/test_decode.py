"""Upload validation on real hostile files: each one gets a clear rejection or is a decodable image."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from imago_pipeline.core.enrichment.decode import InvalidImage, inspect_image, sniff_media_type
from imago_pipeline.core.enrichment.thumbnail import make_thumbnail
from tests.conftest import shared

LIMITS = dict(max_bytes=50 * 1024 * 1024, max_pixels=89_000_000)
BAD_FILES = sorted(p for p in shared("bad").iterdir() if not p.name.endswith((".txt", ".md", ".csv")))

# What each hostile file must get; "accept" files are valid images with hostile metadata or headers.
EXPECTED_KIND = {
    "corkami__md5-1.png": "corrupt", "corkami__md5-2.png": "corrupt",
    "fuzzdb__POC_phpinfo-metadata.jpg": "accept", "fuzzdb__lottapixel.jpg": "too_many_pixels",
    "pillow__apng_syntax_num_frames_invalid.png": "accept", "pillow__avif_hopper-missing-pixi.avif": "accept",
    "pillow__bmp_b_badrle.bmp": "unsupported_type", "pillow__bmp_b_badwidth.bmp": "unsupported_type",
    "pillow__broken.png": "corrupt", "pillow__broken_exif_dpi.jpg": "accept",
    "pillow__crash-0c7e0e8e11ce787078f00b5b0ca409a167f070e0.tif": "corrupt",
    "pillow__crash-4fb027452e6988530aa5dabee76eecacb3b79f8a.j2k": "unsupported_type",
    "pillow__decompression_bomb.gif": "too_many_pixels", "pillow__decompression_bomb.ico": "unsupported_type",
    "pillow__exif-dpi-zerodivision.jpg": "accept", "pillow__hopper_bad_exif.jpg": "accept",
    "pillow__hopper_rle8_row_overflow.bmp": "unsupported_type", "pillow__invalid-exif.jpg": "accept",
    "pillow__junk_jpeg_header.jpg": "accept", "pillow__libtiff_segfault.tif": "corrupt",
    "pillow__negative_size.ppm": "unsupported_type",
    "pillow__oom-225817ca0f8c663be7ab4b9e717b02c661e66834.tif": "corrupt",
    "pillow__png_decompression_dos.png": "corrupt", "pillow__pngtest_bad.png.bin": "unsupported_type",
    "pillow__psd-oob-write.psd": "unsupported_type", "pillow__sugarshack_bad_mpo_header.jpg": "accept",
    "pillow__tiff_overflow_rows_per_strip.tif": "corrupt", "pillow__truncated_app14.jpg": "accept",
    "pillow__truncated_image.png": "corrupt", "pillow__truncated_jpeg.jpg": "corrupt",
    "pillow__zero_width.gif": "corrupt",
}


def test_every_bad_file_is_listed():
    assert sorted(p.name for p in BAD_FILES) == sorted(EXPECTED_KIND)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("path", BAD_FILES, ids=lambda p: p.name)
def test_hostile_file_gets_a_clear_answer(path):
    data = path.read_bytes()
    expected = EXPECTED_KIND[path.name]
    if expected == "accept":
        info = inspect_image(data, **LIMITS)
        assert info.width > 0 and info.height > 0
        thumb = make_thumbnail(data)  # an accepted image must also survive the pipeline's decode
        assert Image.open(io.BytesIO(thumb.jpeg)).size == (thumb.width, thumb.height)
    else:
        with pytest.raises(InvalidImage) as caught:
            inspect_image(data, **LIMITS)
        assert caught.value.kind == expected
        assert str(caught.value)


def test_extension_is_never_trusted():
    png = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(png, format="PNG")
    assert sniff_media_type(png.getvalue()) == "image/png"
    assert sniff_media_type(b"<?php system($_GET['c']); ?>") is None


def test_limits_are_enforced_before_decoding():
    big = io.BytesIO()
    Image.new("L", (4000, 3000)).save(big, format="PNG")
    with pytest.raises(InvalidImage) as pixels:
        inspect_image(big.getvalue(), max_bytes=LIMITS["max_bytes"], max_pixels=1_000_000)
    assert pixels.value.kind == "too_many_pixels" and "4000x3000" in str(pixels.value)
    with pytest.raises(InvalidImage) as size:
        inspect_image(big.getvalue(), max_bytes=100, max_pixels=LIMITS["max_pixels"])
    assert size.value.kind == "too_large"
    with pytest.raises(InvalidImage) as empty:
        inspect_image(b"", **LIMITS)
    assert empty.value.kind == "empty"


def test_thumbnail_is_upright_and_small():
    # landscape_6.jpg is stored rotated with orientation 6: the thumbnail must be portrait... of a landscape
    original = shared("exif", "exif-samples", "jpg", "orientation", "landscape_6.jpg").read_bytes()
    stored = Image.open(io.BytesIO(original)).size
    thumb = make_thumbnail(original, size=256)
    assert max(thumb.width, thumb.height) == 256
    assert (thumb.width > thumb.height) == (stored[1] > stored[0])  # orientation 6 swaps the axes


@pytest.mark.parametrize("path", [("exif", "exif-samples", "heic", "IMG_5195.HEIC"),
                                  ("exif", "exif-samples", "heic", "samplefilehub.heif"),
                                  ("exif", "pillow", "exif.avif")])
def test_a_heif_or_avif_file_cut_short_is_refused_as_truncated(path):
    """libheif decodes what it has of a truncated file without an error: a copy stalled at 20% passed the
    full decode and was registered, with other pixels."""
    data = shared(*path).read_bytes()
    assert inspect_image(data, max_bytes=10**8, max_pixels=10**8).width > 0
    for fraction in (0.05, 0.2, 0.5, 0.99):
        with pytest.raises(InvalidImage, match="truncated"):
            inspect_image(data[:int(len(data) * fraction)], max_bytes=10**8, max_pixels=10**8)
