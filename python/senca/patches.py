"""Patch geometry around spots (paper section 3.3), the torch Dataset that cuts them, and the QC picture.

The paper crops "a given patch radius (up to third degree neighbour - three times the distance
between two spots) around the physical locations of each spot". Here:

* spot pitch = the median nearest-neighbour distance between spot centres, in image pixels;
* radius = ``radius_spots`` x pitch (default 3.0), patch side = 2 x radius, rounded to whole pixels;
  ``--patch-px N`` sets the side directly instead;
* the patch is the axis-aligned square of that side centred on the spot's pixel coordinate; parts
  that fall outside the image are padded with white (the glass background of bright-field H&E), never
  dropped, so every spot keeps a patch and an embedding row;
* a spot whose centre lies outside the image by more than half a patch is an error naming the spot:
  its patch would be mostly padding, and it nearly always means the coordinates are in another
  image's pixel frame.

Patches are cut from the working image (see :mod:`senca.images`) one at a time in
:class:`PatchDataset` and resized to the encoder input at once, so a DataLoader batch is the only
place several patches exist together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from senca.errors import SencaError
from senca.graph import median_spot_pitch
from senca.images import FILL_WHITE, crop_padded, thumbnail

DEFAULT_RADIUS_SPOTS = 3.0


# ----------------------------------------------------------------------------- geometry
def spot_pitch(xy: np.ndarray) -> float:
    """Median distance from each spot to its nearest other spot (pixels); duplicates are ignored."""
    pitch = median_spot_pitch(xy)
    if not np.isfinite(pitch):
        raise SencaError("fewer than two distinct spot positions: the spot pitch (and so the patch size) "
                         "is undefined; give --patch-px")
    return pitch


@dataclass(frozen=True)
class PatchGeometry:
    """How big each spot's patch is in full-resolution pixels, and which rule chose it."""

    side_px: int
    radius_px: float
    pitch_px: float | None
    radius_spots: float | None
    rule: str

    def to_json(self) -> dict[str, object]:
        return {"side_px": self.side_px, "radius_px": self.radius_px, "spot_pitch_px": self.pitch_px,
                "radius_spots": self.radius_spots, "radius_rule": self.rule}


def patch_geometry(xy: np.ndarray, pitch_px: float | None = None, radius_spots: float = DEFAULT_RADIUS_SPOTS,
                   patch_px: int | None = None) -> PatchGeometry:
    """Patch side = 2 x ``radius_spots`` x spot pitch (paper 3.3), or ``patch_px`` when given.

    ``pitch_px`` is the preprocess stage's recorded spot pitch; when absent it is measured from ``xy``.
    """
    if patch_px is not None:
        if patch_px < 1:
            raise SencaError(f"--patch-px must be a positive number of pixels, not {patch_px}")
        return PatchGeometry(side_px=int(patch_px), radius_px=patch_px / 2, pitch_px=pitch_px, radius_spots=None,
                             rule=f"side = --patch-px {int(patch_px)} px")
    if not np.isfinite(radius_spots) or radius_spots <= 0:
        raise SencaError(f"--radius-spots must be positive, not {radius_spots}")
    if pitch_px is None or not np.isfinite(pitch_px) or pitch_px <= 0:
        pitch_px = spot_pitch(xy)
    radius = float(radius_spots) * float(pitch_px)
    side = max(1, int(np.floor(2 * radius + 0.5)))
    return PatchGeometry(side_px=side, radius_px=radius, pitch_px=float(pitch_px), radius_spots=float(radius_spots),
                         rule=f"radius = {radius_spots:g} x spot pitch {pitch_px:.2f} px = {radius:.1f} px; "
                              f"side = 2 x radius = {side} px")


def decode_reduction(side_px: int, input_px: int) -> int:
    """Largest power-of-two reduction (<= 8) that keeps a patch at least ``input_px`` wide.

    Patches are resized to the encoder input anyway, so decoding finer than that only costs memory.
    """
    reduction = 1
    while reduction < 8 and side_px / (reduction * 2) >= input_px:
        reduction *= 2
    return reduction


def check_spots_in_image(spot_ids: Sequence[str], xy: np.ndarray, width: int, height: int, side_px: int,
                         image_path: str | Path) -> None:
    """Every spot centre must be finite and inside the image, give or take half a patch."""
    x, y = xy[:, 0], xy[:, 1]
    bad = ~(np.isfinite(x) & np.isfinite(y))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise SencaError(f"spot {spot_ids[i]!r} has no pixel position (pixel_x={x[i]}, pixel_y={y[i]})")
    tol = side_px / 2
    outside = (x < -tol) | (x > width + tol) | (y < -tol) | (y > height + tol)
    if outside.any():
        idx = np.flatnonzero(outside)
        i = int(idx[0])
        more = f" (and {len(idx) - 1} more spots)" if len(idx) > 1 else ""
        raise SencaError(
            f"spot {spot_ids[i]!r} at pixel ({x[i]:.1f}, {y[i]:.1f}) lies outside this {width} x {height} image "
            f"by more than half a patch ({tol:.0f} px){more}; are the spot coordinates in this image's pixel frame?",
            image_path)


def patch_corners(xy: np.ndarray, side_px: int, reduction: int = 1) -> tuple[np.ndarray, int]:
    """Top-left corners (N, 2) [x, y] and side of each patch in working-image pixels (vectorised).

    The square is centred on the spot: left = round(x / reduction - side / 2), half-way cases up.
    """
    side = max(1, int(np.floor(side_px / reduction + 0.5)))
    corners = np.floor(np.asarray(xy, dtype=np.float64) / reduction - side / 2 + 0.5).astype(np.int64)
    return corners, side


def count_padded(corners: np.ndarray, side: int, width: int, height: int) -> int:
    """How many patches reach past the image border (and so contain white padding)."""
    over = (corners[:, 0] < 0) | (corners[:, 1] < 0) | (corners[:, 0] + side > width) | (corners[:, 1] + side > height)
    return int(over.sum())


# ----------------------------------------------------------------------------- dataset
class PatchDataset(torch.utils.data.Dataset):
    """Spot ``i`` -> its patch as a uint8 (input_px, input_px, 3) tensor, cut and resized on demand.

    The working image is either an in-memory array (``workers=0``) or a ``.npy`` file that each
    DataLoader worker memory-maps: workers then share the operating system's page cache instead of
    each receiving a pickled copy of the slide (which is what happens with spawn/forkserver start
    methods). Normalisation happens on the device, batched, so uint8 crosses process boundaries.
    """

    def __init__(self, corners: np.ndarray, side: int, input_px: int, pixels: np.ndarray | None = None,
                 pixels_file: str | Path | None = None, fill: int = FILL_WHITE):
        if (pixels is None) == (pixels_file is None):
            raise ValueError("give exactly one of pixels and pixels_file")
        self.corners = np.ascontiguousarray(corners, dtype=np.int64)
        self.side = int(side)
        self.input_px = int(input_px)
        self.fill = fill
        self.pixels_file = None if pixels_file is None else str(pixels_file)
        self._pixels = pixels

    def __len__(self) -> int:
        return len(self.corners)

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        if self.pixels_file is not None:
            state["_pixels"] = None  # each worker maps the file itself
        return state

    @property
    def pixels(self) -> np.ndarray:
        if self._pixels is None:
            self._pixels = np.load(self.pixels_file, mmap_mode="r")
        return self._pixels

    def patch(self, i: int) -> np.ndarray:
        """Spot ``i``'s patch resized to the encoder input, uint8 (input_px, input_px, 3)."""
        left, top = (int(v) for v in self.corners[i])
        crop = crop_padded(self.pixels, left, top, self.side, self.fill)
        if self.side != self.input_px:
            crop = np.array(Image.fromarray(crop).resize((self.input_px, self.input_px), Image.Resampling.BILINEAR))
        return crop

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.patch(i)))


# ----------------------------------------------------------------------------- QC picture
_QC_COLOURS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
               (240, 50, 230), (128, 128, 0)]


def qc_examples(xy: np.ndarray, k: int = 6) -> np.ndarray:
    """Indices of ``k`` spots spread over the tissue: farthest-point sampling from the most central spot.

    Deterministic, O(N k) time and O(N) memory.
    """
    xy = np.asarray(xy, dtype=np.float64)
    chosen = [int(np.argmin(((xy - np.median(xy, axis=0)) ** 2).sum(axis=1)))]
    nearest = ((xy - xy[chosen[0]]) ** 2).sum(axis=1)
    while len(chosen) < min(k, len(xy)):
        chosen.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, ((xy - xy[chosen[-1]]) ** 2).sum(axis=1))
    return np.asarray(chosen, dtype=np.int64)


_QC_MAX_OUTLINES = 3000


def _mark_centres(overlay: Image.Image, centres: np.ndarray) -> None:
    """Paint a 2 x 2 px dark dot at every spot centre, vectorised (Visium HD has ~10^6 spots)."""
    rgba = np.array(overlay)
    cx = np.floor(centres[:, 0]).astype(np.int64)
    cy = np.floor(centres[:, 1]).astype(np.int64)
    for dx in (0, 1):
        for dy in (0, 1):
            x, y = cx + dx, cy + dy
            keep = (x >= 0) & (y >= 0) & (x < rgba.shape[1]) & (y < rgba.shape[0])
            rgba[y[keep], x[keep]] = (20, 20, 20, 220)
    overlay.paste(Image.fromarray(rgba, "RGBA"))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()


def draw_patch_qc(working: np.ndarray, reduction: int, corners: np.ndarray, side: int, xy: np.ndarray,
                  examples: np.ndarray, example_patches: Sequence[np.ndarray], caption: Sequence[str],
                  max_side: int = 1500) -> Image.Image:
    """The slide thumbnail with every patch outlined (faint), example patches outlined in colour and
    shown below as the encoder sees them, and a caption; so a user sees the patches sit on tissue.

    ``corners``/``side`` are in working-image pixels, ``xy`` in full-resolution pixels.
    """
    font = _font(max(12, max_side // 90))
    line_h = (font.getbbox("Ag")[3] + 6) if hasattr(font, "getbbox") else 16
    n_examples = len(example_patches)
    tile = min(224, (max_side - 10 * (n_examples + 1)) // max(1, n_examples))
    strip_h = (tile + 20 if n_examples else 0) + line_h * len(caption) + 10
    # the whole picture (thumbnail + strip) stays within max_side on both sides
    thumb = thumbnail(working, max_side, max_height=max(64, max_side - strip_h)).convert("RGBA")
    scale = thumb.width / working.shape[1]  # working px -> thumbnail px
    overlay = Image.new("RGBA", thumb.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    boxes = np.column_stack([corners, corners + side]) * scale
    step = max(1, len(boxes) // _QC_MAX_OUTLINES)  # 10^5+ overlapping outlines would only paint the slide blue
    for x0, y0, x1, y1 in boxes[::step]:
        draw.rectangle((x0, y0, x1, y1), outline=(0, 60, 255, 70), width=1)
    _mark_centres(overlay, np.asarray(xy, dtype=np.float64) / reduction * scale)
    width = max(2, round(thumb.width / 400))
    label_font = _font(max(12, thumb.width // 60))
    for n, i in enumerate(examples):
        colour = _QC_COLOURS[n % len(_QC_COLOURS)]
        x0, y0, x1, y1 = boxes[i]
        draw.rectangle((x0, y0, x1, y1), outline=(*colour, 255), width=width)
        draw.text((x0 + 2 * width, y0 + width), str(n + 1), fill=(*colour, 255), font=label_font)
    picture = Image.alpha_composite(thumb, overlay).convert("RGB")

    text_w = max((font.getlength(line) if hasattr(font, "getlength") else 7 * len(line)) for line in caption) + 20
    canvas_w = int(min(max_side, max(picture.width, text_w, 10 + n_examples * (min(tile, 96) + 10))))
    tile = min(tile, (canvas_w - 10 * (n_examples + 1)) // max(1, n_examples))
    strip_h = (tile + 20 if n_examples else 0) + line_h * len(caption) + 10
    canvas = Image.new("RGB", (canvas_w, picture.height + strip_h), (255, 255, 255))
    canvas.paste(picture, ((canvas_w - picture.width) // 2, 0))
    draw = ImageDraw.Draw(canvas)
    y = picture.height + 10
    for n, patch in enumerate(example_patches):
        colour = _QC_COLOURS[n % len(_QC_COLOURS)]
        x = 10 + n * (tile + 10)
        canvas.paste(Image.fromarray(patch).resize((tile, tile), Image.Resampling.BILINEAR), (x, y))
        draw.rectangle((x - 2, y - 2, x + tile + 1, y + tile + 1), outline=colour, width=3)
        draw.text((x + 4, y + 2), str(n + 1), fill=colour, font=font)
    y += tile + 10 if n_examples else 0
    for line in caption:
        draw.text((10, y), line, fill=(0, 0, 0), font=font)
        y += line_h
    return canvas
