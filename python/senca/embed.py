"""The ``embed-patches`` stage's work: one frozen-CNN embedding per spot from the H&E around it.

The paper's image branch is ResNet -> FC -> H (section 3.3). The ResNet is frozen, so it runs once per
slide here (batched, on the GPU when present) and ``train-senca`` trains only the FC on these
features. Steps: check the spots against the image header -> patch geometry -> find the encoder's
weights offline -> decode the slide once at a working resolution -> cut, resize and encode patches
in batches (DataLoader workers cut while the model runs) -> a QC picture.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from senca.errors import SencaError
from senca.images import FILL_WHITE, open_slide, read_working_image
from senca.patches import (
    DEFAULT_RADIUS_SPOTS,
    PatchDataset,
    check_spots_in_image,
    count_padded,
    decode_reduction,
    draw_patch_qc,
    patch_corners,
    patch_geometry,
    qc_examples,
)

log = logging.getLogger("senca")

QC_MAX_SIDE = 1500
MIN_FEATURE_SD = 1e-4  # patch features spread less than this across spots: a blank image (issue #18: sd <= 5e-7)
MIN_INPUT_PX = 32  # ResNet / EfficientNet downsample 32-fold: smaller inputs leave no feature map to pool
AUTO_MIN_INPUT_PX = 64  # the automatic input never goes below this (a 2 x 2 last feature map to pool)


@dataclass
class PatchEmbedding:
    """The stage's results: float32 (spots x d) features in spot order, metadata, the QC picture."""

    spot_ids: list[str]
    matrix: np.ndarray
    metadata: dict[str, Any]
    qc: Image.Image


def resolve_image_path(image: str | Path | None, spots_meta: dict[str, Any], spots_path: str | Path | None = None) -> Path:
    """``--image`` if given, else the image preprocess resolved (spots metadata ``image.path``).

    A relative recorded path is taken relative to the spots file's folder (a staged Nextflow task).
    """
    if image is not None:
        return Path(image)
    recorded = (spots_meta.get("image") or {}).get("path")
    if not recorded:
        raise SencaError("this slide has no H&E image (spots metadata image: none): pass --image, or train "
                         "without --patches (image-less slide)", spots_path)
    path = Path(recorded)
    if not path.is_absolute() and spots_path is not None and not path.exists():
        path = Path(spots_path).parent / path
    if not path.exists():
        raise SencaError(f"the H&E image recorded by preprocess ({recorded}) is not found here: pass --image",
                         spots_path)
    return path


def _check_image_matches_spots(info: Any, spots_meta: dict[str, Any]) -> None:
    """Spot pixel coordinates index the image preprocess resolved; another-sized image would misplace them."""
    recorded = spots_meta.get("image") or {}
    width, height = recorded.get("width"), recorded.get("height")
    if width and height and (int(width), int(height)) != (info.width, info.height):
        raise SencaError(f"image is {info.width} x {info.height} px but the spot coordinates were resolved for a "
                         f"{width} x {height} px image ({recorded.get('path')}); give that image, or rerun preprocess "
                         "with this one", info.path)


def auto_input_px(side_px: int, native_px: int) -> int:
    """The encoder input for patches of ``side_px`` image pixels when ``--input-px`` is not given.

    The encoder's own input (224) when the patch has at least that many pixels (a downsample, as the paper
    does); a smaller patch is resized only up to its own side rounded up to a multiple of 32 (at least
    ``AUTO_MIN_INPUT_PX``), because upsampling adds no detail, only cost (~ side^2). Why: a Visium lowres
    image gives ~37 px patches; embedded at 64 px instead of 224 the DLPFC layers come out the same
    (+0.002 +- 0.022 ARI, 5 seeds, docs/method.md round 19) at ~1/12 of the embedding time.
    """
    if side_px >= native_px:
        return native_px
    return int(min(native_px, max(AUTO_MIN_INPUT_PX, -(-side_px // 32) * 32)))


def embed_patches(spots: pd.DataFrame, spots_meta: dict[str, Any], image_path: str | Path, encoder: str = "resnet50",
                  weights: str | Path | None = None, radius_spots: float = DEFAULT_RADIUS_SPOTS,
                  patch_px: int | None = None, batch_size: int = 64, workers: int = 0, device: str = "auto",
                  quiet: bool = False, input_px: int | None = None) -> PatchEmbedding:
    """Embed the H&E patch around every spot with a frozen ImageNet CNN (paper 3.3).

    ``spots``/``spots_meta``: a spots artifact (``spot_id``, ``pixel_x``, ``pixel_y`` in the image's
    pixel frame; metadata ``spot_pitch_px``, ``image``). Returns features in the spots' row order.
    ``input_px``: side the patches are resized to before the encoder (default: :func:`auto_input_px`, the
    encoder's own 224 unless the patches are smaller). The encoders pool their last feature map globally,
    so a smaller input gives features of the same width at ~(input_px / 224)^2 of the cost: how 10^5-spot
    slides are embedded on a CPU.
    """
    from torch.utils.data import DataLoader

    from senca.device import resolve_device
    from senca.encoders import encode_batches, load_encoder

    if batch_size < 1:
        raise SencaError(f"--batch-size must be at least 1, not {batch_size}")
    if workers < 0:
        raise SencaError(f"--workers must be 0 or more, not {workers}")
    if input_px is not None and input_px < MIN_INPUT_PX:
        raise SencaError(f"--input-px must be at least {MIN_INPUT_PX} (the encoders downsample 32-fold), "
                         f"not {input_px}")
    if spots.empty:
        raise SencaError("the spots table has no spots")
    torch_device = resolve_device(device)
    ids = spots["spot_id"].astype(str).tolist()
    xy = spots[["pixel_x", "pixel_y"]].to_numpy(dtype=np.float64)

    info = open_slide(image_path)  # header only: cheap checks before any decoding or weight loading
    _check_image_matches_spots(info, spots_meta)
    geometry = patch_geometry(xy[np.isfinite(xy).all(axis=1)], spots_meta.get("spot_pitch_px"), radius_spots, patch_px)
    check_spots_in_image(ids, xy, info.width, info.height, geometry.side_px, info.path)
    loaded = load_encoder(encoder, weights)
    if input_px is not None:
        size, size_rule = int(input_px), "--input-px"
    else:
        size = auto_input_px(geometry.side_px, loaded.spec.input_px)
        size_rule = (f"auto: the encoder's {size} px" if size == loaded.spec.input_px else
                     f"auto: the {geometry.side_px} px patch rounded up to {size} px (not upsampled to the encoder's "
                     f"{loaded.spec.input_px})")

    reduction = decode_reduction(geometry.side_px, size)
    log.info("decoding %s (%d x %d px) at 1/%d resolution; patch side %d px (%s); encoder input %d px (%s)",
             info.path, info.width, info.height, reduction, geometry.side_px, geometry.rule, size, size_rule)
    working = read_working_image(info.path, reduction)
    corners, side = patch_corners(xy, geometry.side_px, reduction)
    height, width = working.pixels.shape[:2]
    padded = count_padded(corners, side, width, height)
    if padded:
        log.info("%d of %d patches reach past the image border and are padded with white", padded, len(ids))

    caption = [
        f"{spots_meta.get('sample', '?')}: {len(ids)} spots, {info.width} x {info.height} px image, "
        f"{padded} patches padded white at the border",
        f"patch {geometry.side_px} px ({geometry.rule})",
        f"encoder {loaded.spec.name} at {size} px, weights: {loaded.weights} "
        f"({Path(loaded.weights_source).name if loaded.pretrained else loaded.weights_source})"
        + ("  -- NOT PRETRAINED" if not loaded.pretrained else ""),
    ]
    examples = qc_examples(xy)
    dataset = PatchDataset(corners, side, size, pixels=working.pixels)
    qc = draw_patch_qc(working.pixels, reduction, corners, side, xy, examples,
                       [dataset.patch(int(i)) for i in examples], caption, QC_MAX_SIDE)

    with tempfile.TemporaryDirectory(prefix="senca-patches-") as tmp:
        if workers > 0:  # workers memory-map one on-disk copy instead of each getting a pickled slide
            pixels_file = Path(tmp) / "working.npy"
            np.save(pixels_file, working.pixels)
            dataset = PatchDataset(corners, side, size, pixels_file=pixels_file)
        del working  # with workers the page cache holds the slide; without, the dataset does
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                            pin_memory=torch_device.type == "cuda", persistent_workers=False)
        matrix, precision = encode_batches(loaded, loader, len(ids), torch_device, quiet, total=len(loader))
    spread = float(matrix.std(axis=0).max()) if len(ids) > 1 else float("inf")
    if spread < MIN_FEATURE_SD:  # preprocess's image QC should have caught it; never train on such features
        raise SencaError(f"all {len(ids)} patches embed to the same features (largest sd across spots {spread:.1g}): "
                         "the image shows nothing that tells the spots apart; rerun preprocess with --image-choice "
                         "none (or another image)", info.path)

    metadata = {
        **loaded.metadata(),
        "input_px": size, "input_px_rule": size_rule, "encoder_native_input_px": loaded.spec.input_px,
        "patch": {**geometry.to_json(), "side_working_px": side, "decode_reduction": reduction,
                  "resized_to_px": size, "resize": "bilinear (antialiased)",
                  "padding": f"constant white ({FILL_WHITE}, {FILL_WHITE}, {FILL_WHITE}) outside the image",
                  "n_padded": padded},
        "image": {**info.to_json(), "source": (spots_meta.get("image") or {}).get("source")},
        "feature_sd_max": spread,
        "device": str(torch_device), "precision": precision, "batch_size": batch_size, "workers": workers,
        "platform": spots_meta.get("platform"),
    }
    return PatchEmbedding(spot_ids=ids, matrix=matrix, metadata=metadata, qc=qc)
