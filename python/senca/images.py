"""Reading H&E slide images: sizes from the header, one bounded decode, padded crops, thumbnails.

Why this module exists: a full-resolution H&E is ~10^4 x 10^4 px (HER2ST's are 9,272 x 9,923), which
trips Pillow's decompression-bomb guard and costs ~0.4 GB as a Pillow image. The image branch only
ever looks at the slide through patches resized to the encoder's input (224 px), and a patch is
usually several times that wide (HER2ST: ~1,900 px), so the slide is decoded *once*, at a
*working resolution* reduced by a power of two that keeps every patch at least as wide as the
encoder input:

* JPEG is decoded directly at 1/2, 1/4 or 1/8 scale in the DCT domain (Pillow's draft mode): the
  full-resolution raster never exists in memory (a HER2ST slide at 1/8: 1,159 x 1,241 px, 4 MB).
* PNG and TIFF have no reduced decode in Pillow: the whole raster is decoded once (Pillow keeps 4
  bytes per pixel), reduced by box averaging, and freed before any patch is cut.
* The working copy is one ``uint8`` (H, W, 3) array (3 bytes per working pixel). Patches are sliced
  from it lazily, one at a time, and resized at once, so at most one batch of encoder-sized patches
  exists at a time; N full-size patches are never held together.

Peak memory is therefore about 4 bytes per *working* pixel for JPEG and 4 bytes per *full* pixel for
PNG/TIFF (plus the 3-byte working copy). tifffile/OpenSlide tile readers would lift the PNG/TIFF
peak but are not dependencies; convert a huge TIFF to JPEG (or give its image at the resolution the
spot coordinates use) if that peak matters.

Pillow's ``MAX_IMAGE_PIXELS`` guard (~89 Mpx) protects servers from hostile uploads; slide images
are the user's own trusted files, so senca opens images up to :data:`MAX_SLIDE_PIXELS` (2^31 px,
e.g. 46,000 x 46,000) and refuses larger ones with a clear error instead of a Pillow warning.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from senca.errors import SencaError
from senca.io.artifacts import atomic_path

MAX_SLIDE_PIXELS = 2**31
"""Largest image (width x height) senca opens; Pillow's own default guard is ~89 Mpx."""

FILL_WHITE = 255
"""Padding value for patch areas outside the image: H&E background is bright, white glass."""

_DRAFT_FORMATS = ("JPEG", "MPO")
_UNSUPPORTED_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_STRIP_ROWS = 1024  # rows converted per step when copying a Pillow image into numpy


@dataclass(frozen=True)
class SlideInfo:
    """What the image header says, read without decoding pixels."""

    path: Path
    width: int
    height: int
    format: str
    mode: str

    def to_json(self) -> dict[str, object]:
        return {"path": str(self.path), "width": self.width, "height": self.height, "format": self.format}


@dataclass
class WorkingImage:
    """The slide decoded once at ``1 / reduction`` of full resolution, as a uint8 (H, W, 3) array.

    Full-resolution pixel coordinates map into it by dividing by ``reduction``.
    """

    pixels: np.ndarray
    reduction: int
    info: SlideInfo


@contextlib.contextmanager
def _slide_pixel_limit() -> Iterator[None]:
    """Raise Pillow's decompression-bomb limit to :data:`MAX_SLIDE_PIXELS` for our own slide files."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_SLIDE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Pillow's notes on a damaged header ("Corrupt EXIF data", ...) would print stray lines: the
            # image either decodes or fails with a SencaError naming the file
            warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


@contextlib.contextmanager
def _open(path: Path) -> Iterator[Image.Image]:
    """Open ``path`` lazily (header only), turning every failure into a SencaError naming the file."""
    if not path.exists():
        raise SencaError("image file not found", path)
    if not path.is_file():
        raise SencaError("image path is not a file", path)
    with _slide_pixel_limit():
        try:
            image = Image.open(path)
        except Image.DecompressionBombError:
            raise SencaError(f"image is larger than senca's limit of {MAX_SLIDE_PIXELS:,} pixels", path) from None
        except (Image.UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise SencaError(f"not an image Pillow can read (JPEG, PNG or TIFF expected): {exc}", path) from None
        try:
            if image.width * image.height > MAX_SLIDE_PIXELS:
                raise SencaError(f"image is {image.width} x {image.height} px, larger than senca's limit of "
                                 f"{MAX_SLIDE_PIXELS:,} pixels", path)
            if image.mode in _UNSUPPORTED_MODES:
                raise SencaError(f"image mode {image.mode!r} (16-bit or float) is not supported: save the H&E "
                                 "as 8-bit RGB", path)
            yield image
        finally:
            image.close()


def open_slide(path: str | Path) -> SlideInfo:
    """Size, format and mode of a slide image from its header (no pixels decoded)."""
    path = Path(path)
    with _open(path) as image:
        return SlideInfo(path=path, width=image.width, height=image.height,
                         format=str(image.format), mode=image.mode)


def read_working_image(path: str | Path, reduction: int = 1) -> WorkingImage:
    """Decode the slide once at ``1 / reduction`` of full resolution (``reduction`` in 1, 2, 4, 8).

    JPEG uses DCT-domain draft decoding (the full raster is never built); other formats decode in
    full, are box-reduced, and the full raster is freed before returning. A truncated or corrupt
    file is a SencaError naming it.
    """
    path = Path(path)
    if reduction not in (1, 2, 4, 8):
        raise ValueError(f"reduction must be 1, 2, 4 or 8, not {reduction}")
    with _open(path) as image:
        info = SlideInfo(path=path, width=image.width, height=image.height, format=str(image.format),
                         mode=image.mode)
        if reduction > 1 and image.format in _DRAFT_FORMATS:
            image.draft("RGB", (max(1, image.width // reduction), max(1, image.height // reduction)))
        try:
            image.load()
        except MemoryError:
            raise
        except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, zlib errors...
            raise SencaError(f"cannot decode image (truncated or corrupt file?): {exc}", path) from None
        drafted = max(1, round(info.width / image.width))
        rest = reduction // drafted
        reduced = image.reduce(rest) if rest > 1 else image
        try:
            pixels = _to_rgb_array(reduced)
        finally:
            if reduced is not image:
                reduced.close()
    return WorkingImage(pixels=pixels, reduction=reduction, info=info)


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    """Copy a Pillow image into a uint8 (H, W, 3) array strip by strip (no full-size temporaries).

    Transparent pixels are composited onto white (glass), palette and grey images become RGB.
    """
    width, height = image.size
    out = np.empty((height, width, 3), dtype=np.uint8)
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    for top in range(0, height, _STRIP_ROWS):
        strip = image.crop((0, top, width, min(height, top + _STRIP_ROWS)))
        if has_alpha:
            rgba = strip.convert("RGBA")
            strip = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
        elif strip.mode != "RGB":
            strip = strip.convert("RGB")
        out[top:top + strip.height] = np.asarray(strip)
    return out


def crop_padded(pixels: np.ndarray, left: int, top: int, side: int, fill: int = FILL_WHITE) -> np.ndarray:
    """The ``side`` x ``side`` square at (``left``, ``top``) of ``pixels``; parts outside are ``fill``.

    Works on in-memory and memory-mapped arrays alike and copies only the patch.
    """
    height, width = pixels.shape[:2]
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + side, width), min(top + side, height)
    if x0 == left and y0 == top and x1 == left + side and y1 == top + side:
        return np.array(pixels[y0:y1, x0:x1])
    patch = np.full((side, side, pixels.shape[2]), fill, dtype=pixels.dtype)
    if x1 > x0 and y1 > y0:
        patch[y0 - top:y1 - top, x0 - left:x1 - left] = pixels[y0:y1, x0:x1]
    return patch


def thumbnail(pixels: np.ndarray, max_side: int = 1500, max_height: int | None = None) -> Image.Image:
    """A thumbnail of an RGB array at most ``max_side`` px wide and ``max_height`` (default ``max_side``) high.

    A cheap integer-stride subsample first bounds the copy Pillow makes (a 10^4 px working image
    never becomes a second full-size Pillow image); the final resize is antialiased.
    """
    height, width = pixels.shape[:2]
    stride = max(1, max(height, width) // (2 * max_side))
    image = Image.fromarray(np.ascontiguousarray(pixels[::stride, ::stride]))
    image.thumbnail((max_side, max_height or max_side), Image.Resampling.LANCZOS)
    return image


def slide_thumbnail(path: str | Path, max_side: int = 1500) -> Image.Image:
    """A thumbnail straight from the file (JPEG decoded at the coarsest draft scale that suffices)."""
    info = open_slide(path)
    reduction = 1
    while reduction < 8 and max(info.width, info.height) // (reduction * 2) >= max_side:
        reduction *= 2
    return thumbnail(read_working_image(path, reduction).pixels, max_side)


def save_png(image: Image.Image, path: str | Path) -> Path:
    """Write a PNG atomically (no timestamp chunks, so identical inputs give identical files)."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", optimize=False)
    return Path(path)


# ----------------------------------------------------------------------------- image QC
QC_MAX_SIDE = 1024
"""Side of the thumbnail image QC looks at: enough to see tissue at spots, cheap for a 10^4 px slide."""
QC_MIN_IMAGE_SD = 2.0
"""Grey-level sd (0..255) below which a whole image is constant (a blank or masked-out export)."""
QC_MIN_SPOT_SD = 1.0
"""Grey-level sd across the spots' windows (and within them) below which the patches cannot differ."""
QC_MIN_TISSUE_FRACTION = 0.2
"""Fewer spots than this on tissue (not white glass, not black mask): the image is not this slide's H&E."""
_GLASS_GREY, _GLASS_SATURATION, _MASK_GREY = 235.0, 12.0, 20.0


@dataclass
class ImageQC:
    """What image QC found: ``ok`` and, when not, ``problem`` in words a user can act on."""

    ok: bool
    problem: str | None
    metrics: dict[str, float]

    def to_json(self) -> dict[str, object]:
        return {"ok": self.ok, "problem": self.problem, **{k: round(float(v), 4) for k, v in self.metrics.items()}}


def image_qc(pixels: np.ndarray, xy: np.ndarray, spot_pitch: float | None, full_size: tuple[int, int]) -> ImageQC:
    """Judge whether an image can show the tissue at the spots, before any patch is embedded.

    ``pixels``: the image (or a thumbnail of it) as (H, W, 3) uint8; ``xy``: spot centres in the
    full image's pixel frame, whose (width, height) is ``full_size``; ``spot_pitch`` in the same frame.
    Refused: a constant image (sd of grey < :data:`QC_MIN_IMAGE_SD`; Space Ranger has shipped all-black
    hires PNGs), windows at the spots that are all alike (every patch would embed to the same
    features), and spots mostly on glass or mask (< :data:`QC_MIN_TISSUE_FRACTION` on tissue: another
    slide's image, or coordinates in another frame). Thresholds are loose on purpose: a faint but real
    H&E passes; only an image that cannot tell spots apart fails.
    """
    rgb = np.asarray(pixels)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    rgb = rgb[..., :3].astype(np.float32)
    grey = rgb.mean(axis=2)
    saturation = rgb.max(axis=2) - rgb.min(axis=2)
    image_sd = float(grey.std())
    metrics = {"image_grey_mean": float(grey.mean()), "image_grey_sd": image_sd}
    if image_sd < QC_MIN_IMAGE_SD:
        return ImageQC(False, f"the image is constant (grey level {grey.mean():.0f} of 255 everywhere, sd "
                              f"{image_sd:.2g})", metrics)
    height, width = grey.shape
    scale = width / max(full_size[0], 1)
    points = np.asarray(xy, dtype=np.float64) * scale
    finite = np.isfinite(points).all(axis=1)
    inside = finite & (points[:, 0] >= 0) & (points[:, 1] >= 0) & (points[:, 0] < width) & (points[:, 1] < height)
    metrics["spots_inside_fraction"] = float(inside.mean()) if len(points) else 0.0
    if inside.mean() < 0.5:  # an image of another size: embed-patches names the first spot outside it
        return ImageQC(True, None, metrics)
    radius = max(1, int(round((spot_pitch or 0.0) * scale / 2)))
    window_means, window_sds, on_tissue = [], [], []
    for x, y in points[inside]:
        x0, y0 = int(x), int(y)
        g = grey[max(0, y0 - radius):y0 + radius + 1, max(0, x0 - radius):x0 + radius + 1]
        s = saturation[max(0, y0 - radius):y0 + radius + 1, max(0, x0 - radius):x0 + radius + 1]
        window_means.append(float(g.mean()))
        window_sds.append(float(g.std()))
        background = ((g > _GLASS_GREY) & (s < _GLASS_SATURATION)) | (g < _MASK_GREY)
        on_tissue.append(float((~background).mean()) >= 0.5)
    spot_sd = float(np.std(window_means))
    within_sd = float(np.mean(window_sds))
    tissue = float(np.mean(on_tissue))
    metrics.update({"spot_grey_sd": spot_sd, "spot_window_sd": within_sd, "spots_on_tissue_fraction": tissue})
    if spot_sd < QC_MIN_SPOT_SD and within_sd < QC_MIN_SPOT_SD:
        return ImageQC(False, f"the image is uniform at the spots (grey sd {spot_sd:.2g} across spots, "
                              f"{within_sd:.2g} within them): every patch would embed alike", metrics)
    if tissue < QC_MIN_TISSUE_FRACTION:
        return ImageQC(False, f"only {tissue:.0%} of spots lie on tissue (the rest on glass, mask or outside "
                              "the image): another slide's image, or coordinates in another frame?", metrics)
    return ImageQC(True, None, metrics)


def qc_thumbnail(path: str | Path) -> tuple[np.ndarray, tuple[int, int]]:
    """A QC thumbnail of an image file and the file's full (width, height)."""
    info = open_slide(path)
    return np.asarray(slide_thumbnail(path, QC_MAX_SIDE).convert("RGB")), (info.width, info.height)
