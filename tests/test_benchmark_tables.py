"""The benchmark's summary tables (benchmarks/benchmark.py): pairing by seed, deterministic rows included."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
benchmark = pytest.importorskip("benchmark")


def _row(slide: str, method: str, seed: int | None, ari: float) -> dict:
    return {"dataset": "dlpfc", "variant": "image-less", "slide": slide, "method": method, "seed": seed,
            "ari": ari, "status": "ok", "config": "default"}


def test_training_adds_pairs_a_deterministic_floor_with_every_seed():
    """The floor is fitted once per slide (seed empty); its difference to S is still paired by seed."""
    rows = [_row(slide, benchmark.SENCA, seed, ari) for seed, (a, b) in enumerate([(0.50, 0.60), (0.60, 0.60)])
            for slide, ari in (("151673", a), ("151674", b))]
    rows += [_row(slide, benchmark.UNTRAINED, seed, 0.40) for seed in (0, 1) for slide in ("151673", "151674")]
    rows += [_row("151673", benchmark.FLOOR, None, 0.62), _row("151674", benchmark.FLOOR, None, 0.58)]
    table = benchmark.training_adds_table(pd.DataFrame(rows).astype({"seed": "Int64"}))
    row = table.iloc[0]
    assert row["seeds"] == 2 and row["slides"] == 2
    assert row["floor"] == "0.600 ± 0.000"
    assert row["training adds over floor"] == "-0.025 ± 0.035"  # per seed: 0.55 - 0.60, 0.60 - 0.60
    assert row["training adds over untrained"] == "0.175 ± 0.035"


def test_training_adds_ignores_a_deterministic_row_missing_a_slide():
    """A once-per-slide row that covers only some of the slides cannot be paired: shown as '-'."""
    rows = [_row(slide, benchmark.SENCA, seed, 0.5) for seed in (0, 1) for slide in ("151673", "151674")]
    rows.append(_row("151673", benchmark.FLOOR, None, 0.62))
    table = benchmark.training_adds_table(pd.DataFrame(rows).astype({"seed": "Int64"}))
    assert table.iloc[0]["floor"] == "-"
