"""Figures of the cluster, markers and evaluate stages (matplotlib, Agg backend, never shown).

Every figure is built by a function that takes arrays and returns a ``Figure``; stages save it with
``senca.io.artifacts.save_figure`` (atomic, metadata stripped so reruns give identical bytes).
Colours are one palette everywhere (clusters.png, umap.png, the dendrogram, the ``.h5ad``'s
``uns['senca_cluster_colors']``) so cluster 3 is the same colour in every picture of a slide.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: HPC nodes and containers have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import EllipseCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

log = logging.getLogger("senca")

THUMBNAIL_MAX_SIDE = 2000  # pixels: enough to see tissue structure, small enough for an .h5ad and a report
SPOT_DIAMETER_FRACTION = 0.55  # spot diameter / spot pitch: Visium 55 um / 100 um (legacy ST: 100/200)
EXCLUDED_COLOR = "#d0d0d0"  # spots whose ground-truth label is undetermined / NA
DENSE_SPOTS = 20_000  # above: spots drawn one pitch wide and opaque (Visium HD bins would be sub-pixel dots)


# ----------------------------------------------------------------------------- colours
def cluster_colors(n: int) -> list[str]:
    """``n`` distinct colours: tab20 (its 10 strong hues first, then their light partners, so
    neighbouring cluster ids never get two shades of one hue), then tab20b and tab20c (cycling beyond 60)."""
    from matplotlib.colors import to_hex

    tab20 = plt.get_cmap("tab20").colors
    palette = [to_hex(c) for c in tab20[0::2] + tab20[1::2]]
    palette += [to_hex(c) for name in ("tab20b", "tab20c") for c in plt.get_cmap(name).colors]
    return [palette[i % len(palette)] for i in range(n)]


# ----------------------------------------------------------------------------- images
@dataclass
class Thumbnail:
    """A downscaled H&E image and the factor that maps full-resolution pixels into it."""

    pixels: np.ndarray  # (h, w, 3) uint8
    scale: float  # thumbnail pixels per full-resolution pixel
    full_size: tuple[int, int]  # (width, height) of the image the spot coordinates index into


def load_thumbnail(path: str | Path, max_side: int = THUMBNAIL_MAX_SIDE) -> Thumbnail:
    """Read an H&E image downscaled so its longest side is at most ``max_side`` pixels.

    Goes through ``senca.images`` (the reader embed-patches uses: size from the header, JPEG
    decoded at a reduced draft scale, Pillow's pixel limit lifted for slide images), so a
    10k x 10k scan never becomes a full-size raster here and both stages fail the same way on a
    bad file.
    """
    from senca.images import open_slide, slide_thumbnail

    info = open_slide(path)
    image = slide_thumbnail(path, max_side)
    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    return Thumbnail(pixels, pixels.shape[1] / info.width, (info.width, info.height))


# ----------------------------------------------------------------------------- spatial panels
def _spot_collection(xy: np.ndarray, colors: Sequence[str], diameter: float, ax: Any,
                     alpha: float = 0.9) -> EllipseCollection:
    """Spots as circles of ``diameter`` in data units, so they stay to scale at any figure size."""
    n = len(xy)
    coll = EllipseCollection(np.full(n, diameter), np.full(n, diameter), np.zeros(n), units="xy",
                             offsets=xy, offset_transform=ax.transData, facecolors=list(colors),
                             edgecolors="none", linewidths=0, alpha=alpha)
    ax.add_collection(coll)
    return coll


def _spatial_panel(ax: Any, xy: np.ndarray, colors: Sequence[str], pitch: float,
                   thumb: Thumbnail | None, title: str) -> None:
    """One panel: spots over the thumbnail (image y axis: origin top-left)."""
    scale = thumb.scale if thumb is not None else 1.0
    pts = xy * scale
    dense = len(xy) > DENSE_SPOTS  # true-size spots would be a pixel or two: tile the tissue instead
    fraction = 1.05 if dense else SPOT_DIAMETER_FRACTION * 1.25  # a little larger than life, to be seen
    diameter = max(pitch * scale * fraction, 1e-9)
    margin = max(pitch * scale * 2, 1.0)
    lo, hi = pts.min(axis=0) - margin, pts.max(axis=0) + margin
    if thumb is not None:
        h, w = thumb.pixels.shape[:2]
        ax.imshow(thumb.pixels, origin="upper", extent=(0, w, h, 0), interpolation="antialiased")
        lo, hi = np.maximum(lo, 0), np.minimum(hi, [w, h])
    _spot_collection(pts, colors, diameter, ax, alpha=1.0 if dense else 0.9)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(hi[1], lo[1])  # inverted: y grows downwards as in the image
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)


def _legend(ax: Any, names: Sequence[str], colors: Sequence[str], title: str) -> None:
    handles = [Patch(facecolor=c, label=n) for n, c in zip(names, colors, strict=True)]
    ax.legend(handles=handles, title=title, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
              title_fontsize=9, frameon=False, ncol=1 if len(handles) <= 20 else 2)


def label_colors(labels: Sequence[str]) -> dict[str, str]:
    """Colour per distinct label (sorted names, so the same label set always looks the same)."""
    names = sorted(set(labels))
    return dict(zip(names, cluster_colors(len(names)), strict=True))


def plot_spatial_clusters(xy: np.ndarray, clusters: np.ndarray, pitch: float, thumb: Thumbnail | None,
                          sample: str, labels: np.ndarray | None = None, valid: np.ndarray | None = None,
                          ari: float | None = None, image_note: str | None = None) -> Figure:
    """Clusters over the H&E thumbnail and, when labels exist, the ground truth beside it.

    ``labels``/``valid``: per spot label and whether it is scored (undetermined/NA drawn grey).
    """
    k = int(clusters.max()) + 1 if len(clusters) else 0
    palette = cluster_colors(k)
    panels = 2 if labels is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 6), squeeze=False)
    where = "no image" if thumb is None else "over H&E"
    if image_note:
        where = image_note
    ax = axes[0, 0]
    _spatial_panel(ax, xy, [palette[c] for c in clusters], pitch, thumb,
                   f"{sample}: SENCA-st clusters (k={k}, {where})")
    _legend(ax, [str(i) for i in range(k)], palette, "cluster")
    if labels is not None:
        assert valid is not None
        colors_of = label_colors([str(lab) for lab, ok in zip(labels, valid, strict=True) if ok])
        colors = [colors_of[str(lab)] if ok else EXCLUDED_COLOR for lab, ok in zip(labels, valid, strict=True)]
        ari_text = "" if ari is None or not np.isfinite(ari) else f", ARI={ari:.3f}"
        ax = axes[0, 1]
        _spatial_panel(ax, xy, colors, pitch, thumb, f"ground truth{ari_text}")
        names = list(colors_of)
        cols = list(colors_of.values())
        if not valid.all():
            names.append("excluded (undetermined/NA)")
            cols.append(EXCLUDED_COLOR)
        _legend(ax, names, cols, "label")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- UMAP
def plot_umap(umap: np.ndarray, clusters: np.ndarray, sample: str, labels: np.ndarray | None = None,
              valid: np.ndarray | None = None) -> Figure:
    """UMAP of the shared embedding S coloured by cluster (and by ground truth when present)."""
    k = int(clusters.max()) + 1 if len(clusters) else 0
    palette = cluster_colors(k)
    panels = 2 if labels is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 5), squeeze=False)
    size = float(np.clip(20000 / max(len(umap), 1), 0.5, 30))
    ax = axes[0, 0]
    ax.scatter(umap[:, 0], umap[:, 1], c=[palette[c] for c in clusters], s=size, linewidths=0, rasterized=True)
    ax.set_title(f"{sample}: UMAP of S by cluster", fontsize=10)
    _legend(ax, [str(i) for i in range(k)], palette, "cluster")
    if labels is not None:
        assert valid is not None
        colors_of = label_colors([str(lab) for lab, ok in zip(labels, valid, strict=True) if ok])
        colors = [colors_of[str(lab)] if ok else EXCLUDED_COLOR for lab, ok in zip(labels, valid, strict=True)]
        ax = axes[0, 1]
        ax.scatter(umap[:, 0], umap[:, 1], c=colors, s=size, linewidths=0, rasterized=True)
        ax.set_title("UMAP of S by ground truth", fontsize=10)
        _legend(ax, list(colors_of), list(colors_of.values()), "label")
    for ax in axes.ravel():
        ax.set_xlabel("UMAP1")
        ax.set_ylabel("UMAP2")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- dendrogram
def plot_dendrogram(linkage: np.ndarray, node_cluster: np.ndarray, n_clusters: int, cut_height: float,
                    sample: str, note: str = "") -> Figure:
    """The top of the Ward tree (last ``max(30, k)`` merges), links coloured by the cluster below them.

    ``linkage``: scipy format (n-1, 4); ``node_cluster``: cluster of every node (leaves then merges),
    -1 for a node above the cut. Leaves are labelled ``cluster (spots)``.
    """
    from scipy.cluster.hierarchy import dendrogram

    palette = cluster_colors(n_clusters)
    n = linkage.shape[0] + 1
    counts = np.concatenate([np.ones(n), linkage[:, 3]])

    def link_color(node: int) -> str:
        c = node_cluster[node]
        return palette[c] if c >= 0 else "#555555"

    def leaf_label(node: int) -> str:
        c = node_cluster[node]
        return f"{c} ({int(counts[node])})" if c >= 0 else f"({int(counts[node])})"

    p = max(30, n_clusters)
    fig, ax = plt.subplots(figsize=(max(8.0, 0.3 * min(p, n)), 5))
    dendrogram(linkage, truncate_mode="lastp", p=p, link_color_func=link_color, leaf_label_func=leaf_label,
               leaf_rotation=90, leaf_font_size=8, ax=ax, above_threshold_color="#555555")
    ax.axhline(cut_height, color="#aa0000", linestyle="--", linewidth=0.8)
    ax.set_ylabel("Ward merge height")
    ax.set_xlabel("cluster (spots under the leaf)")
    ax.set_title(f"{sample}: Ward dendrogram of S, cut at k={n_clusters}{note}", fontsize=10)
    fig.tight_layout()
    return fig


def placeholder_figure(text: str) -> Figure:
    """A figure that says why the real one could not be drawn (keeps the declared outputs present)."""
    fig, ax = plt.subplots(figsize=(5, 2))
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    ax.set_axis_off()
    return fig



def ensure_scanpy_image_key(adata: Any, sample: str) -> bool:
    """Let Scanpy's default ``sc.pl.spatial(adata, color=...)`` work on an image-less slide; True when changed.

    Why: with ``img_key`` left at its default, Scanpy picks ``images['hires']`` or ``['lowres']`` and stops
    with a bare ``StopIteration`` when there is neither, so the final ``.senca.h5ad`` of an image-less
    slide failed the first call a user makes. An image-less slide gets ``images['hires'] = None``: the
    key Scanpy looks for (with ``tissue_hires_scalef`` mapping ``obsm['spatial']`` into the plot) and
    no pixels, so nothing can be taken for an H&E; ``metadata['image']`` already says ``none``.
    """
    library = (adata.uns.get("spatial") or {}).get(sample)
    if library is None:
        return False
    images = library.setdefault("images", {})
    if any(value is not None for value in images.values()) or "hires" in images:
        return False
    images["hires"] = None
    library.setdefault("scalefactors", {}).setdefault("tissue_hires_scalef", 1.0)
    return True
