"""Readers for Space Ranger outs/, .h5ad and legacy ST, on files written in the real formats."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from senca.errors import SencaError
from senca.io.readers import read_labels, read_slide, read_tissue_positions
from senca.io.samplesheet import SlideSpec
from senca.synthetic import make_synthetic_slide


def spec_of(slide, **overrides) -> SlideSpec:
    fields = {"sample": slide.sample, "data": slide.data, "image": slide.image, "positions": slide.positions,
              "labels": slide.labels} | overrides
    return SlideSpec(**fields)


@pytest.mark.parametrize("header", [True, False])
def test_spaceranger_outs_with_and_without_header(tmp_path, header):
    slide = make_synthetic_slide(tmp_path, sample="V", fmt="visium", n_rows=8, n_cols=9, n_genes=50, header=header)
    raw = read_slide(spec_of(slide))
    assert raw.platform == "visium" and raw.n_spots == 72 and len(raw.genes) == 50
    assert raw.image.source == "hires" and raw.image.scale == 0.5
    assert raw.image.path.name == "tissue_hires_image.png"
    # hires pixels = full-res * scale: matches what the synthetic writer painted
    truth = pd.read_csv(slide.data / "spatial" / ("tissue_positions.csv" if header else "tissue_positions_list.csv"),
                        header=0 if header else None)
    assert np.allclose(raw.coords["pixel_x"].to_numpy(), truth.iloc[:, 5].to_numpy() * 0.5)
    assert raw.labels.notna().all() and set(raw.labels) == set(slide.truth)
    # counts identical to what was written (10x HDF5 round trip)
    assert raw.counts.sum() > 0 and raw.counts.shape == (72, 50)


def test_tissue_positions_parquet_and_off_tissue_spots(tmp_path):
    slide = make_synthetic_slide(tmp_path, sample="V", fmt="visium", n_rows=6, n_cols=6, n_genes=40)
    spatial = slide.data / "spatial"
    table = pd.read_csv(spatial / "tissue_positions.csv")
    table.loc[:4, "in_tissue"] = 0
    (spatial / "tissue_positions.csv").unlink()
    table.to_parquet(spatial / "tissue_positions.parquet")
    assert len(read_tissue_positions(spatial / "tissue_positions.parquet")) == 36
    raw = read_slide(spec_of(slide))
    assert raw.n_spots == 31


def test_spaceranger_samplesheet_image_wins(tmp_path):
    """A samplesheet image is the full-resolution H&E (scale 1.0); naming the folder's own hires PNG instead
    chooses that PNG in its own frame (issue #18: it used to be taken for a full-resolution image)."""
    import shutil

    slide = make_synthetic_slide(tmp_path, sample="V", fmt="visium", n_rows=6, n_cols=6, n_genes=40)
    hires = slide.data / "spatial" / "tissue_hires_image.png"
    full = shutil.copy(hires, tmp_path / "fullres.png")
    raw = read_slide(spec_of(slide, image=Path(full)))
    assert raw.image.source == "samplesheet" and raw.image.scale == 1.0
    raw = read_slide(spec_of(slide, image=hires))
    assert raw.image.source == "hires" and raw.image.scale == 0.5 and raw.image.choice == "hires"


def test_h5ad_reader_and_embedded_image(tmp_path):
    slide = make_synthetic_slide(tmp_path, sample="H", fmt="h5ad", n_rows=6, n_cols=7, n_genes=40)
    raw = read_slide(spec_of(slide))
    assert raw.platform == "h5ad" and raw.n_spots == 42
    assert raw.image.source == "h5ad:hires" and raw.image.array is not None
    assert raw.labels.notna().all()


def test_h5ad_without_spatial_is_refused(tmp_path):
    path = tmp_path / "x.h5ad"
    ad.AnnData(X=np.ones((5, 3), dtype=np.float32)).write_h5ad(path)
    with pytest.raises(SencaError, match=r"x\.h5ad: no obsm\['spatial'\]"):
        read_slide(SlideSpec("x", path))


def test_legacy_st_joins_counts_positions_labels(synthetic_slide):
    raw = read_slide(spec_of(synthetic_slide))
    assert raw.platform == "st" and raw.n_spots == 16 * 18
    assert list(raw.coords.columns) == ["pixel_x", "pixel_y", "array_row", "array_col"]
    assert (raw.labels.reindex(synthetic_slide.truth.index) == synthetic_slide.truth).all()


def test_st_label_rows_for_missing_spots_are_ignored_but_wrong_slide_refused(synthetic_slide, tmp_path):
    raw = read_slide(spec_of(synthetic_slide, labels=None))
    extra = tmp_path / "labels.tsv"
    pd.DataFrame({"x": [1.02, 99.0], "y": [0.98, 99.0], "label": ["a", "b"]}).to_csv(extra, sep="\t", index=False)
    labels = read_labels(extra, raw.spot_ids, raw.coords)
    assert labels["1x1"] == "a" and labels.notna().sum() == 1
    wrong = tmp_path / "wrong.tsv"
    pd.DataFrame({"x": [98.0, 99.0], "y": [99.0, 99.0], "label": ["a", "b"]}).to_csv(wrong, sep="\t", index=False)
    with pytest.raises(SencaError, match="no label row matches a spot"):
        read_labels(wrong, raw.spot_ids, raw.coords)


def _rewrite_counts(slide, tmp_path, edit) -> SlideSpec:
    table = pd.read_csv(slide.data, sep="\t", index_col=0)
    table = edit(table)
    path = tmp_path / "edited.tsv.gz"
    table.to_csv(path, sep="\t")
    return spec_of(slide, data=path)


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda t: t.iloc[:0], "empty count matrix"),
    (lambda t: t.assign(**{t.columns[0]: -1}), "negative count at spot"),
    (lambda t: t.rename(index={t.index[1]: t.index[0]}), "duplicated spot id"),
    (lambda t: t.rename(columns={t.columns[1]: t.columns[0]}), "duplicated gene name"),
    (lambda t: t.set_axis([f"s{i}" for i in range(len(t))]), "no spot in common with the counts"),
])
def test_bad_counts(synthetic_slide, tmp_path, edit, needle):
    with pytest.raises(SencaError, match=needle):
        read_slide(_rewrite_counts(synthetic_slide, tmp_path, edit))


def test_non_numeric_coordinates_name_the_column(synthetic_slide, tmp_path):
    spots = pd.read_csv(synthetic_slide.positions, sep="\t")
    spots["pixel_x"] = spots["pixel_x"].astype(object)
    spots.loc[3, "pixel_x"] = "12,5"
    path = tmp_path / "spots.tsv"
    spots.to_csv(path, sep="\t", index=False)
    with pytest.raises(SencaError, match=r"spots\.tsv: column 'pixel_x' has a non-numeric value '12,5'"):
        read_slide(spec_of(synthetic_slide, positions=path))


def test_truncated_gzip_is_a_clear_error(synthetic_slide, tmp_path):
    data = synthetic_slide.data.read_bytes()
    path = tmp_path / "cut.tsv.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SencaError, match=r"cut\.tsv\.gz: cannot read"):
        read_slide(spec_of(synthetic_slide, data=path))


def test_label_rows_without_coordinates_are_skipped(synthetic_slide, tmp_path):
    raw = read_slide(spec_of(synthetic_slide, labels=None))
    path = tmp_path / "labels.tsv"
    path.write_text("x\ty\tlabel\n1\t1\ta\n\t\tb\n2\t1\tc\n")  # as in HER2ST F1 / G2
    labels = read_labels(path, raw.spot_ids, raw.coords)
    assert labels["1x1"] == "a" and labels["2x1"] == "c" and labels.notna().sum() == 2
