"""The preprocess stage: artifacts, metadata, real slides, and one-line errors for bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from senca import __version__
from senca.errors import SencaError
from senca.io.artifacts import read_meta, read_table

from helpers import assert_one_line_error, run_cli


def test_synthetic_artifacts_and_metadata(synthetic_preprocessed):
    paths = synthetic_preprocessed
    spots, meta = read_table(paths["spots"], "spots")
    expr, _ = read_table(paths["expr"], "expr")
    graph, graph_meta = read_table(paths["graph"], "graph")
    assert len(spots) == len(expr) == 16 * 18 and list(expr["spot_id"]) == list(spots["spot_id"])
    assert expr.shape[1] - 1 == 200 and all(expr[c].dtype == np.float32 for c in expr.columns[1:])
    assert meta["senca_version"] == __version__ and meta["stage"] == "preprocess" and meta["sample"] == "syn"
    assert meta["params"]["n_hvg"] == 200 and meta["k"] == 4 and graph_meta["k"] == 4
    assert set(meta["inputs"]) == {"data", "positions", "labels", "image"}
    assert all(len(v) == 64 for v in meta["inputs"].values())  # sha256
    assert meta["image"]["source"] == "samplesheet" and meta["image"]["width"] > 0
    assert meta["spot_pitch_px"] == pytest.approx(synthetic_preprocessed["slide"].pitch_px)
    # graph: k out-edges per spot, no self loops; on the square grid an interior spot's 4 nearest are one
    # pitch away (16 x 18 grid: 14 x 16 interior spots)
    assert (graph.groupby("source").size() == 4).all() and (graph["source"] != graph["target"]).all()
    one_pitch = np.isclose(graph["distance"], synthetic_preprocessed["slide"].pitch_px, rtol=1e-3)
    assert (graph.assign(ok=one_pitch).groupby("source")["ok"].all()).sum() >= 14 * 16
    truth = synthetic_preprocessed["slide"].truth
    assert (spots.set_index("spot_id")["label"] == truth.reindex(spots["spot_id"])).all()


def test_h5ad_holds_all_kept_genes(synthetic_preprocessed):
    import anndata as ad

    adata = ad.read_h5ad(synthetic_preprocessed["h5ad"])
    assert adata.n_vars > 200 and adata.var["highly_variable"].sum() == 200
    assert "counts" in adata.layers and float(adata.layers["counts"].max()) >= 1
    assert np.allclose(np.expm1(adata.X.toarray()).sum(axis=1), 1e4, rtol=1e-3)
    assert adata.obsm["spatial"].shape == (adata.n_obs, 2) and "senca" in adata.uns


def test_outputs_are_deterministic(synthetic_slide, tmp_path):
    s = synthetic_slide
    args = ["preprocess", "--sample", "d", "--data", s.data, "--positions", s.positions, "--labels", s.labels, "-q"]
    run_cli(*args, "--outdir", tmp_path / "a")
    run_cli(*args, "--outdir", tmp_path / "b")
    for kind in ("spots", "expr", "graph"):
        assert (tmp_path / "a" / f"d.{kind}.parquet").read_bytes() == (tmp_path / "b" / f"d.{kind}.parquet").read_bytes()


def test_samplesheet_mode_and_k_override(synthetic_slide, tmp_path):
    from senca.synthetic import write_samplesheet

    sheet = write_samplesheet(synthetic_slide.data.parent / "one.csv", [synthetic_slide])
    run_cli("preprocess", "--samplesheet", sheet, "--k", "8", "--n-hvg", "50", "--outdir", tmp_path, "-q")
    graph, meta = read_table(tmp_path / "syn.graph.parquet", "graph")
    assert meta["k"] == 8 and (graph.groupby("source").size() == 8).all()
    assert read_meta(tmp_path / "syn.expr.parquet")["n_hvg"] == 50


def test_visium_defaults_to_six_neighbours(tmp_path):
    from senca.synthetic import make_synthetic_slide

    s = make_synthetic_slide(tmp_path, sample="V", fmt="visium", n_rows=8, n_cols=8, n_genes=60)
    run_cli("preprocess", "--sample", "V", "--data", s.data, "--outdir", tmp_path / "o", "-q")
    graph, meta = read_table(tmp_path / "o" / "V.graph.parquet", "graph")
    assert meta["k"] == 6 and meta["platform"] == "visium" and meta["image"]["source"] == "hires"
    interior = graph.groupby("source")["distance"].max()
    assert np.allclose(np.median(interior), meta["spot_pitch_px"], rtol=0.03)  # pixels rounded in full-res


def preprocess_visium_variants(tmp_path, variants: dict[str, tuple[str, ...]]) -> None:
    """Preprocess one small synthetic Visium slide (40 HVGs) into tmp_path/<name> once per option set."""
    from senca.synthetic import make_synthetic_slide

    s = make_synthetic_slide(tmp_path, sample="V", fmt="visium", n_rows=10, n_cols=10, n_genes=120)
    for name, options in variants.items():
        run_cli("preprocess", "--sample", "V", "--data", s.data, "--n-hvg", "40", *options,
                "--outdir", tmp_path / name, "-q")


def test_hvg_flavour_follows_the_platform_and_the_option(tmp_path):
    preprocess_visium_variants(tmp_path, {"v3": (), "paper": ("--hvg-flavor", "seurat")})
    v3, paper = read_meta(tmp_path / "v3" / "V.expr.parquet"), read_meta(tmp_path / "paper" / "V.expr.parquet")
    assert v3["hvg_flavor"] == "seurat_v3" and v3["params"]["hvg_flavor"] is None  # by platform, recorded
    assert paper["hvg_flavor"] == "seurat" and paper["params"]["hvg_flavor"] == "seurat"
    genes_v3 = set(read_table(tmp_path / "v3" / "V.expr.parquet", "expr")[0].columns)
    genes_paper = set(read_table(tmp_path / "paper" / "V.expr.parquet", "expr")[0].columns)
    assert len(genes_v3) == len(genes_paper) == 41 and genes_v3 != genes_paper  # a different ranking


def test_pearson_residuals_match_scanpy_in_any_row_blocks():
    import anndata as ad
    import scanpy as sc
    import scipy.sparse as sp

    from senca.residuals import PearsonResiduals

    rng = np.random.default_rng(0)
    counts = sp.csr_matrix(rng.negative_binomial(2, 0.3, size=(300, 50)).astype(np.float32))
    reference = ad.AnnData(counts.copy())
    sc.experimental.pp.normalize_pearson_residuals(reference)
    residuals = PearsonResiduals(counts)
    assert residuals.shape == (300, 50)
    np.testing.assert_allclose(residuals.toarray(), np.asarray(reference.X), rtol=1e-5, atol=1e-5)
    blocks = np.vstack([residuals[start:start + 64] for start in range(0, 300, 64)])
    np.testing.assert_array_equal(blocks, residuals.toarray())
    empty = PearsonResiduals(sp.csr_matrix(np.array([[0.0, 0.0], [1.0, 3.0]])))  # a spot with no counts
    assert np.isfinite(empty.toarray()).all() and (empty.toarray()[0] == 0).all()


def test_hvg_values_option_writes_pearson_residuals_of_the_hvg_counts(tmp_path):
    import anndata as ad
    import scanpy as sc

    preprocess_visium_variants(tmp_path, {"log": ("--hvg-values", "log1p"), "pr": ()})
    log_meta, pr_meta = read_meta(tmp_path / "log" / "V.expr.parquet"), read_meta(tmp_path / "pr" / "V.expr.parquet")
    assert log_meta["hvg_values"] == "log1p" and log_meta["params"]["hvg_values"] == "log1p"
    assert pr_meta["hvg_values"] == "pearson_residuals" and pr_meta["params"]["hvg_values"] is None  # Visium's
    expr, _ = read_table(tmp_path / "pr" / "V.expr.parquet", "expr")
    genes = list(expr.columns[1:])
    assert genes == list(read_table(tmp_path / "log" / "V.expr.parquet", "expr")[0].columns[1:])  # same HVGs
    counts = ad.read_h5ad(tmp_path / "pr" / "V.h5ad")
    subset = ad.AnnData(counts[list(expr["spot_id"]), genes].layers["counts"].copy())
    sc.experimental.pp.normalize_pearson_residuals(subset)
    np.testing.assert_allclose(expr[genes].to_numpy(), np.asarray(subset.X), rtol=1e-5, atol=1e-4)
    assert (expr[genes].to_numpy() < 0).any()  # residuals, not counts: zeros became negative


def test_pearson_residuals_refuse_normalised_input(tmp_path):
    from senca.synthetic import make_synthetic_slide

    s = make_synthetic_slide(tmp_path, sample="V", fmt="visium", n_rows=10, n_cols=10, n_genes=120)
    result = run_cli("preprocess", "--sample", "V", "--data", s.data, "--normalised", "--hvg-values",
                     "pearson_residuals", "--outdir", tmp_path / "out", "-q", expect=None)
    assert result.exit_code != 0
    assert_one_line_error(result, "pearson_residuals needs raw counts")
    assert not (tmp_path / "out" / "V.expr.parquet").exists()


def test_legacy_st_keeps_the_papers_hvg_flavour_and_values(synthetic_preprocessed):
    meta = read_meta(synthetic_preprocessed["expr"])
    assert meta["hvg_flavor"] == "seurat" and meta["hvg_values"] == "log1p"


# ----------------------------------------------------------------------------- real slides
@pytest.mark.parametrize(("slide", "n_spots"), [("A1", 346), ("B1", 295)])
def test_her2st_slides(shared_data, tmp_path, slide, n_spots):
    h = shared_data / "her2st"
    run_cli("preprocess", "--sample", slide, "--data", h / "counts" / f"{slide}.tsv.gz",
            "--positions", h / "spots" / f"{slide}_selection.tsv",
            "--labels", h / "labels" / f"{slide}_labeled_coordinates.tsv", "--outdir", tmp_path, "-q")
    spots, meta = read_table(tmp_path / f"{slide}.spots.parquet", "spots")
    expr, _ = read_table(tmp_path / f"{slide}.expr.parquet", "expr")
    graph, _ = read_table(tmp_path / f"{slide}.graph.parquet", "graph")
    assert len(spots) == n_spots and spots["label"].notna().all()
    assert expr.shape == (n_spots, 501) and meta["k"] == 4
    assert (graph.groupby("source").size() == 4).all() and len(graph) == 4 * n_spots


def test_her2st_a1_with_its_image(shared_data, tmp_path):
    h = shared_data / "her2st"
    run_cli("preprocess", "--sample", "A1", "--data", h / "counts/A1.tsv.gz", "--positions", h / "A1_he/A1_selection.tsv",
            "--image", h / "A1_he/A1.png", "--labels", h / "labels/A1_labeled_coordinates.tsv", "--outdir", tmp_path, "-q")
    spots, meta = read_table(tmp_path / "A1.spots.parquet", "spots")
    assert (meta["image"]["width"], meta["image"]["height"]) == (2000, 2138)
    assert spots["pixel_x"].between(0, 2000).all() and spots["pixel_y"].between(0, 2138).all()
    assert meta["spot_pitch_px"] == pytest.approx(58.25, rel=0.02)  # measured median; README says about 62.5


def test_dlpfc_visium_lowres(shared_data, tmp_path):
    d = shared_data / "dlpfc" / "151673"
    run_cli("preprocess", "--sample", "151673", "--data", d / "outs", "--labels", d / "labels.csv", "--outdir", tmp_path, "-q")
    spots, meta = read_table(tmp_path / "151673.spots.parquet", "spots")
    assert len(spots) == 3639 and meta["k"] == 6 and meta["image"]["source"] == "lowres"
    assert spots["pixel_x"].max() < 600 and spots["label"].isna().sum() == 28
    assert read_meta(tmp_path / "151673.expr.parquet")["n_hvg"] == 3000  # the Visium default


@pytest.mark.parametrize(("platform", "hexagonal", "expected"), [
    ("st", False, 500), ("visium", True, 3000), ("h5ad", True, 3000), ("h5ad", False, 500)])
def test_hvg_count_follows_the_platform(platform, hexagonal, expected):
    from senca.preprocess import PLATFORM_N_HVG, defaults_platform
    from senca.synthetic import grid

    _, _, xy = grid(10, 10, hexagonal)
    assert PLATFORM_N_HVG[defaults_platform(platform, xy)] == expected


# ----------------------------------------------------------------------------- bad input
def _st_args(s, **replace):
    args = {"--sample": "bad", "--data": s.data, "--positions": s.positions, "--labels": s.labels, "--image": s.image}
    args.update(replace)
    return [x for k, v in args.items() if v is not None for x in (k, v)]


def test_missing_file(synthetic_slide, tmp_path):
    result = run_cli("preprocess", *_st_args(synthetic_slide, **{"--data": tmp_path / "nope.tsv.gz"}), "-o", tmp_path / "o", expect=None)
    assert_one_line_error(result, "nope.tsv.gz", "file not found")


def test_unreadable_image(synthetic_slide, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    result = run_cli("preprocess", *_st_args(synthetic_slide, **{"--image": broken}), "-o", tmp_path / "o", expect=None)
    assert_one_line_error(result, "broken.png", "not an image Pillow can read")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_fewer_spots_than_k_plus_one(tmp_path):
    from senca.synthetic import make_synthetic_slide

    s = make_synthetic_slide(tmp_path, sample="tiny", n_rows=1, n_cols=3, n_regions=1, n_genes=30, image=False)
    result = run_cli("preprocess", *_st_args(s, **{"--image": None}), "-o", tmp_path / "o", expect=None)
    assert_one_line_error(result, "3 spot(s)", "needs at least 5")


def test_no_spot_in_common(synthetic_slide, tmp_path):
    spots = pd.read_csv(synthetic_slide.positions, sep="\t")
    spots["x"] += 100
    path = tmp_path / "shifted.tsv"
    spots.to_csv(path, sep="\t", index=False)
    result = run_cli("preprocess", *_st_args(synthetic_slide, **{"--positions": path}), "-o", tmp_path / "o", expect=None)
    assert_one_line_error(result, "shifted.tsv", "no spot in common")


def test_missing_required_column(synthetic_slide, tmp_path):
    spots = pd.read_csv(synthetic_slide.positions, sep="\t").drop(columns=["pixel_y"])
    path = tmp_path / "nopixel.tsv"
    spots.to_csv(path, sep="\t", index=False)
    result = run_cli("preprocess", *_st_args(synthetic_slide, **{"--positions": path}), "-o", tmp_path / "o", expect=None)
    assert_one_line_error(result, "nopixel.tsv", "missing column 'pixel_y'")


def test_st_without_positions(synthetic_slide, tmp_path):
    result = run_cli("preprocess", *_st_args(synthetic_slide, **{"--positions": None}), "-o", tmp_path, expect=None)
    assert_one_line_error(result, "needs --positions")


def test_sencaerror_is_one_line():
    assert "\n" not in str(SencaError("a\nb", "/x/y"))


# ----------------------------------------------------------------------------- --export-image (the Nextflow route)
@pytest.fixture(scope="module")
def blank_hires_outs(tmp_path_factory):
    """A Space Ranger folder whose tissue_hires_image.png is all black (QC rejects it) beside a good lowres."""
    from PIL import Image

    from senca.synthetic import make_synthetic_slide

    s = make_synthetic_slide(tmp_path_factory.mktemp("blank_hires"), sample="vis", fmt="visium", n_rows=8, n_cols=8,
                             n_genes=60, n_regions=2, seed=1)
    spatial = s.data / "spatial"
    hires = Image.open(spatial / "tissue_hires_image.png")
    hires.resize((hires.width // 4, hires.height // 4)).save(spatial / "tissue_lowres_image.png")  # = lowres_scalef
    Image.new("RGB", hires.size, (0, 0, 0)).save(spatial / "tissue_hires_image.png")
    return s.data


def _chosen(outdir, sample):
    return sorted(p.name for p in outdir.glob(f"{sample}.chosen_image.*"))


def test_export_image_places_the_samplesheet_image_beside_the_outputs(synthetic_slide, tmp_path):
    import os

    s = synthetic_slide
    mode = s.image.stat().st_mode
    out = tmp_path / "o"
    run_cli("preprocess", *_st_args(s), "--export-image", "-o", out, "-q")
    chosen = out / f"bad.chosen_image{s.image.suffix.lower()}"
    assert _chosen(out, "bad") == [chosen.name]
    assert os.path.samefile(chosen, s.image)  # a hard link on one file system: no bytes copied
    assert s.image.stat().st_mode == mode  # the input's permissions left alone
    assert read_meta(out / "bad.spots.parquet")["image"]["path"] == str(s.image.resolve())  # still recorded as itself
    run_cli("preprocess", *_st_args(s), "--export-image", "-o", out, "-q")  # a rerun replaces it in place
    assert os.path.samefile(chosen, s.image) and not list(out.glob(".*tmp*"))


def test_export_image_copies_where_links_are_refused(synthetic_slide, tmp_path, monkeypatch):
    import errno
    import os

    def no_links(*_args, **_kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    out = tmp_path / "o"
    run_cli("preprocess", *_st_args(synthetic_slide), "--export-image", "-o", out, "-q")
    [name] = _chosen(out, "bad")
    assert not os.path.samefile(out / name, synthetic_slide.image)
    assert (out / name).read_bytes() == synthetic_slide.image.read_bytes()
    assert not list(out.glob(".*tmp*"))


@pytest.mark.parametrize("image", [None, "none"])
def test_without_export_image_nothing_extra_is_written(synthetic_slide, tmp_path, image):
    """`senca run` does not ask for it (its embed-patches reads the recorded path): its layout is unchanged,
    with an image (no {s}.chosen_image.<ext>) or without (no {s}.chosen_image.none marker)."""
    from senca.io.samplesheet import SlideSpec
    from senca.pipeline import RunOptions, preprocess_call

    out = tmp_path / "o"
    run_cli("preprocess", *_st_args(synthetic_slide, **({"--image": image} if image else {})), "-o", out, "-q")
    assert sorted(p.name for p in out.iterdir()) == ["bad.expr.parquet", "bad.graph.parquet", "bad.h5ad",
                                                     "bad.spots.parquet"]
    s = synthetic_slide
    call = preprocess_call(SlideSpec("bad", s.data, s.image, s.positions, s.labels), tmp_path, RunOptions())
    assert "--export-image" not in call.args


def test_export_image_follows_image_qc_fallback(blank_hires_outs, tmp_path):
    """hires rejected by QC: the exported image is the lowres preprocess fell back to, not the hires."""
    out = tmp_path / "o"
    result = run_cli("preprocess", "--sample", "vis", "--data", blank_hires_outs, "--export-image", "-o", out)
    assert "falling back to tissue_lowres_image.png" in result.stderr
    assert _chosen(out, "vis") == ["vis.chosen_image.png"]
    lowres = blank_hires_outs / "spatial" / "tissue_lowres_image.png"
    assert (out / "vis.chosen_image.png").read_bytes() == lowres.read_bytes()
    image = read_meta(out / "vis.spots.parquet")["image"]
    assert image["source"] == "lowres" and image["path"] == str(lowres.resolve())


@pytest.mark.parametrize(("option", "value", "expected"), [
    ("--image-choice", "none", None), ("--image", "none", None),
    ("--image-choice", "hires", "tissue_hires_image.png"), ("--image", "lowres", "tissue_lowres_image.png"),
])
def test_export_image_follows_the_explicit_choice(blank_hires_outs, tmp_path, option, value, expected):
    out = tmp_path / "o"
    run_cli("preprocess", "--sample", "vis", "--data", blank_hires_outs, option, value, "--export-image", "-o", out, "-q")
    if expected is None:  # image-less: the marker, saying why, in place of an image
        assert _chosen(out, "vis") == ["vis.chosen_image.none"]
        assert read_meta(out / "vis.spots.parquet")["image"]["path"] is None
        assert (out / "vis.chosen_image.none").read_text() == "image-less: image: none was chosen (the slide runs " \
                                                             "image-less)\n"
    else:
        assert (out / "vis.chosen_image.png").read_bytes() == (blank_hires_outs / "spatial" / expected).read_bytes()


def test_export_image_of_an_image_less_slide_writes_the_marker(synthetic_slide, tmp_path):
    """No image given or found: exactly one {s}.chosen_image.* all the same, the marker (one line: why), so a
    runner routes the slide from this task's own outputs; written atomically (no temporary file left)."""
    out = tmp_path / "o"
    run_cli("preprocess", *_st_args(synthetic_slide, **{"--image": None}), "--export-image", "-o", out, "-q")
    assert _chosen(out, "bad") == ["bad.chosen_image.none"]
    assert (out / "bad.chosen_image.none").read_text() == "image-less: no image given or found\n"
    assert read_meta(out / "bad.spots.parquet")["image"]["path"] is None
    assert not list(out.glob(".*tmp*"))


def test_export_image_marks_a_slide_whose_every_image_fails_qc(synthetic_slide, tmp_path):
    """QC rejects the slide's only image and preprocess falls back to none: the marker, with QC's reason."""
    from PIL import Image

    blank = tmp_path / "blank.jpg"
    Image.new("RGB", Image.open(synthetic_slide.image).size, (0, 0, 0)).save(blank)
    out = tmp_path / "o"
    result = run_cli("preprocess", *_st_args(synthetic_slide, **{"--image": blank}), "--export-image", "-o", out)
    assert "falling back to no image (the slide runs image-less)" in result.stderr
    assert _chosen(out, "bad") == ["bad.chosen_image.none"]
    marker = (out / "bad.chosen_image.none").read_text()
    assert marker.startswith("image-less: every image failed QC: samplesheet (") and marker.count("\n") == 1, marker
    assert read_meta(out / "bad.spots.parquet")["image"]["path"] is None


def test_export_image_rerun_leaves_exactly_one_chosen_file(synthetic_slide, tmp_path):
    """A rerun into the same --outdir that changes the choice replaces the earlier file: a runner globbing
    {s}.chosen_image.* never finds the marker beside an image, or two images."""
    out = tmp_path / "o"
    image_name = f"bad.chosen_image{synthetic_slide.image.suffix.lower()}"
    run_cli("preprocess", *_st_args(synthetic_slide), "--export-image", "-o", out, "-q")
    assert _chosen(out, "bad") == [image_name]
    run_cli("preprocess", *_st_args(synthetic_slide, **{"--image": "none"}), "--export-image", "-o", out, "-q")
    assert _chosen(out, "bad") == ["bad.chosen_image.none"]
    run_cli("preprocess", *_st_args(synthetic_slide), "--export-image", "-o", out, "-q")
    assert _chosen(out, "bad") == [image_name]


def test_export_image_of_a_file_without_suffix_still_has_one(synthetic_slide, tmp_path):
    """An H&E file named without an extension is exported as {s}.chosen_image.img: the name always matches
    {s}.chosen_image.* and is never taken for the marker."""
    import os
    import shutil

    bare = tmp_path / "he"
    shutil.copyfile(synthetic_slide.image, bare)
    out = tmp_path / "o"
    run_cli("preprocess", *_st_args(synthetic_slide, **{"--image": bare}), "--export-image", "-o", out, "-q")
    assert _chosen(out, "bad") == ["bad.chosen_image.img"]
    assert os.path.samefile(out / "bad.chosen_image.img", bare)


def test_export_image_of_an_h5ad_is_the_image_written_out_of_it(tmp_path):
    import os

    from senca.synthetic import make_synthetic_slide

    s = make_synthetic_slide(tmp_path, sample="H", fmt="h5ad", n_rows=6, n_cols=7, n_genes=40)
    out = tmp_path / "o"
    run_cli("preprocess", "--sample", "H", "--data", s.data, "--export-image", "-o", out, "-q")
    assert os.path.samefile(out / "H.chosen_image.png", out / "H.image.png")


@pytest.mark.parametrize("choice", ["hires", "lowres"])
def test_run_wide_image_choice_leaves_a_slides_own_image_file_alone(synthetic_slide, tmp_path, choice):
    """One --image-choice for a whole cohort (senca run's rule, the Nextflow pipeline's param): a legacy ST
    slide keeps its own H&E instead of failing for want of Space Ranger images."""
    out = tmp_path / "o"
    run_cli("preprocess", *_st_args(synthetic_slide), "--image-choice", choice, "--export-image", "-o", out, "-q")
    image = read_meta(out / "bad.spots.parquet")["image"]
    assert image["source"] == "samplesheet" and image["path"] == str(synthetic_slide.image.resolve())
    assert _chosen(out, "bad") == [f"bad.chosen_image{synthetic_slide.image.suffix.lower()}"]


def test_image_keyword_on_a_legacy_st_slide_is_still_refused(synthetic_slide, tmp_path):
    result = run_cli("preprocess", *_st_args(synthetic_slide, **{"--image": "lowres"}), "-o", tmp_path, expect=None)
    assert_one_line_error(result, "legacy ST slide has no Space Ranger images")
