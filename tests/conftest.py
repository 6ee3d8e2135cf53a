"""Shared fixtures: synthetic slides the tests write themselves, and the real data when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real HER2ST / DLPFC data beside the repository; tests using it skip when it is absent."""
    if not (SHARED_DATA / "her2st").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (only present on the developers' machines)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def synthetic_slide(tmp_path_factory):
    """A legacy-ST-format synthetic slide (16 x 18 spots, 3 planted regions, H&E-like image)."""
    from senca.synthetic import make_synthetic_slide

    return make_synthetic_slide(tmp_path_factory.mktemp("synthetic"), sample="syn", n_regions=3, seed=0)


@pytest.fixture(scope="session")
def synthetic_preprocessed(synthetic_slide, tmp_path_factory) -> dict:
    """``senca preprocess`` outputs of :func:`synthetic_slide`: paths by kind, plus the slide itself."""
    from senca.io.readers import read_slide
    from senca.io.samplesheet import SlideSpec
    from senca.preprocess import PreprocessParams, preprocess_slide, write_preprocess

    s = synthetic_slide
    spec = SlideSpec(s.sample, s.data, s.image, s.positions, s.labels)
    raw = read_slide(spec)
    params = PreprocessParams(n_hvg=200)
    paths = write_preprocess(preprocess_slide(raw, params), tmp_path_factory.mktemp("preprocessed"), params, raw.inputs)
    return {**paths, "image": s.image, "slide": s, "outdir": paths["spots"].parent}


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny test tensors run faster on one thread than two fighting over two cores (and reproducibly)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
