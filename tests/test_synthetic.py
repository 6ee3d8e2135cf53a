"""The synthetic slide generator scales: counts in sparse blocks, the image in strips, a JPEG beside an .h5ad."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from senca import synthetic


def test_counts_in_blocks_are_sparse_and_keep_the_planted_markers():
    rng = np.random.default_rng(0)
    region = np.repeat([0, 1, 2], 400)
    counts, genes, markers = synthetic.simulate_counts(region, 60, 5, 6.0, rng, depth=0.3, chunk_entries=60 * 50)
    assert sp.issparse(counts) and counts.shape == (1200, 60) and counts.dtype == np.float32
    assert counts.nnz < 0.5 * 1200 * 60  # depth 0.3: mostly zeros
    dense = counts.toarray()
    for r, names in markers.items():
        cols = [genes.index(g) for g in names]
        assert dense[region == r][:, cols].mean() > 3 * dense[region != r][:, cols].mean()


def test_image_in_strips_matches_one_strip_where_it_is_deterministic():
    rows, cols, unit = synthetic.grid(12, 14, hexagonal=False)
    region = (unit[:, 0] > 6).astype(int)
    pitch = 20.0
    xy = unit * pitch + 40
    shape = (int(xy[:, 1].max() + 40), int(xy[:, 0].max() + 40))
    whole = synthetic.paint_image(xy, region, pitch, shape, np.random.default_rng(1))
    strips = synthetic.paint_image(xy, region, pitch, shape, np.random.default_rng(1), strip_pixels=shape[1] * 7)
    glass = (whole == 248).all(axis=2)
    # tissue where a spot is near, in both (nuclei, drawn at random, may overhang the tissue edge)
    assert ((strips == 248).all(axis=2) != glass).mean() < 0.01 and 0.05 < glass.mean() < 0.5
    for r in (0, 1):  # the same stain on each region's tissue, strip by strip or at once
        nearest = np.zeros(shape, bool)
        nearest[:, : int(7 * pitch + 40)] = r == 0
        nearest[:, int(7 * pitch + 40):] = r == 1
        mask = ~glass & nearest
        assert np.abs(whole[mask].mean(axis=0) - strips[mask].mean(axis=0)).max() < 6


def test_h5ad_slide_with_a_jpeg_beside_it(tmp_path):
    import anndata as ad
    from PIL import Image

    slide = synthetic.make_synthetic_slide(tmp_path, sample="big", fmt="h5ad", n_rows=10, n_cols=12, n_genes=40,
                                           pitch_px=16.0, depth=0.3, image_file=True)
    assert slide.image is not None and slide.image.suffix == ".jpg"
    adata = ad.read_h5ad(slide.data)
    assert "spatial" not in adata.uns and sp.issparse(adata.X)
    with Image.open(slide.image) as image:  # obsm['spatial'] indexes this image's pixels
        assert image.width > adata.obsm["spatial"][:, 0].max() and image.height > adata.obsm["spatial"][:, 1].max()
    assert slide.samplesheet_row()["image"] == str(slide.image)
