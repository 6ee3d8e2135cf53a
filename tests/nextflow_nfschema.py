"""How nf-schema 2.5.1 reads a samplesheet, emulated for the tests (Nextflow cannot run here).

``samplesheetToList(sheet, schema)`` (nextflow/validation/samplesheet/SamplesheetConverter.groovy)
reads a CSV/TSV with Nextflow's ``splitCsv(header: true, strip: true, quote: '"')`` after dropping
trailing delimiters from a header that has them (utils/Files.groovy ``sanitize``), then types *every*
cell with ``Types.inferType``: an empty cell becomes null, any other goes through org.json's
``JSONObject.stringToValue`` (org.json 20240303, nf-schema's pinned dependency), so ``151673`` is an
Integer, ``1.5`` a BigDecimal, ``true`` a Boolean, whatever the schema's ``type`` says. The rows are
validated as JSON with the nulls left out; then each row becomes ``[meta, value, ...]`` in the
schema's property order, ``meta`` holding the ``"meta": [...]`` columns and an absent value being
``[]`` (``formatEntry``/``processMeta``).

:func:`string_to_value` follows org.json's code branch by branch (see its docstring), so a test of
the schema sees the values nf-schema's validator sees, for every column, not only integer-typed ones.
"""

from __future__ import annotations

import csv
import json
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any


class JsonNull:
    """org.json's ``JSONObject.NULL`` (the text ``null``): a JSON null, left out like an empty cell."""

    def __repr__(self) -> str:
        return "JSONObject.NULL"


NULL = JsonNull()


def _is_decimal_notation(text: str) -> bool:
    return "." in text or "e" in text or "E" in text or text == "-0"


def string_to_number(text: str) -> int | float | Decimal:
    """org.json ``JSONObject.stringToNumber``; ValueError where it throws NumberFormatException."""
    initial = text[0]
    if not (initial.isascii() and (initial.isdigit() or initial == "-")):
        raise ValueError(text)
    if _is_decimal_notation(text):
        try:
            value = Decimal(text)  # Java's BigDecimal(String) grammar: [sign] digits [. digits] [e[sign]digits]
            if not value.is_finite() or not _java_bigdecimal_syntax(text):
                raise InvalidOperation(text)
        except InvalidOperation:
            # org.json retries as a Java double ("Hex Floats" and the like), rejecting NaN/Infinity
            raise ValueError(text) from None
        if initial == "-" and value == 0:
            return -0.0
        return value
    # "00", "01", "-01" are refused: Java parsers would read them as octal
    if initial == "0" and len(text) > 1 and text[1].isdigit():
        raise ValueError(text)
    if initial == "-" and len(text) > 2 and text[1] == "0" and text[2].isdigit():
        raise ValueError(text)
    if not (text[1:] if initial == "-" else text).isdigit() or not text.isascii():
        raise ValueError(text)  # new BigInteger(val) throws
    return int(text)  # Integer, Long or BigInteger: the same number


def _java_bigdecimal_syntax(text: str) -> bool:
    import re

    return re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", text) is not None


def string_to_value(text: str) -> Any:
    """org.json ``JSONObject.stringToValue`` (20240303): true/false/null in any case, then a number
    when the text starts with a digit or '-' and parses as one, else the text itself."""
    if text == "":
        return text
    lowered = text.lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    if lowered == "null":
        return NULL
    if text[0].isascii() and (text[0].isdigit() or text[0] == "-"):
        try:
            return string_to_number(text)
        except ValueError:
            pass
    return text


def infer_type(value: str | None) -> Any:
    """nf-schema ``Types.inferType`` for one cell: empty means null."""
    if value is None or value == "":
        return None
    return string_to_value(value)


def split_csv(path: Path) -> list[dict[str, str | None]]:
    """``splitCsv(header: true, strip: true, sep: ',' or '\\t', quote: '"')`` after nf-schema's
    ``sanitize`` (a header ending in delimiters has them dropped from every line)."""
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    lines = path.read_text(encoding="utf-8").splitlines()
    if lines and lines[0].endswith((",", "\t")):
        lines = [line.rstrip(",\t") for line in lines]
    reader = csv.reader([line for line in lines if line.strip()], delimiter=sep, quotechar='"')
    rows = list(reader)
    if not rows:
        return []
    header = [h.strip() for h in rows[0]]
    return [{name: (cells[i].strip() if i < len(cells) else None) for i, name in enumerate(header)}
            for cells in rows[1:]]


def rows_for_validation(path: Path) -> list[dict[str, Any]]:
    """The JSON array nf-schema validates: every cell inferred, nulls left out."""
    rows = []
    for raw in split_csv(path):
        typed = {key: infer_type(value) for key, value in raw.items()}
        # a BigDecimal is a JSON number (7.0 an integer, as JSON Schema counts them)
        rows.append({key: float(value) if isinstance(value, Decimal) else value
                     for key, value in typed.items() if value is not None and value is not NULL})
    return rows


def samplesheet_to_list(path: Path, schema_path: Path) -> list[list[Any]]:
    """What ``samplesheetToList`` hands main.nf: ``[meta, value, ...]`` per row, in the schema's
    property order, absent values as ``[]`` (JSON-ready: a BigDecimal becomes a JSON number with a
    fraction, which Groovy's JsonSlurper reads back as a BigDecimal)."""
    properties: dict[str, Any] = json.loads(schema_path.read_text(encoding="utf-8"))["items"]["properties"]
    result = []
    for raw in split_csv(path):
        typed = {key: infer_type(value) for key, value in raw.items()}
        meta: dict[str, Any] = {}
        row: list[Any] = []
        for name, spec in properties.items():
            value = typed.get(name)
            value = [] if value is None or value is NULL else value
            value = float(value) if isinstance(value, Decimal) else value  # a JSON number: BigDecimal in Groovy
            meta_ids = spec.get("meta") or []
            if isinstance(meta_ids, str):
                meta_ids = [meta_ids]
            if meta_ids:
                for key in meta_ids:
                    meta[key] = value
            else:
                row.append(value)
        result.append([meta, *row] if meta else row)
    return result
