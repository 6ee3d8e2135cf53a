"""The Markdown tables the benchmark scripts print and write (one helper, each script its own number format)."""

from __future__ import annotations

from typing import Any

import pandas as pd


def markdown(df: pd.DataFrame, number: str = "{:.1f}", missing: str = "") -> str:
    """``df`` as a GitHub Markdown table: floats through ``number``, missing values as ``missing``."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return missing if pd.isna(value) else number.format(value)
        return missing if value is None else str(value)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])
