"""The pipeline's JSON schemas: nextflow_schema.json (parameters) and assets/schema_input.json (samplesheet).

nf-schema enforces both at the start of every ``nextflow run``; Nextflow is not installable here,
so the schemas are checked with ``jsonschema`` directly: each is a valid draft 2020-12 schema, the
parameters in ``nextflow.config`` and the schema are the same set with the same defaults, the
bundled samplesheets pass, and bad ones are rejected, with the same verdicts as senca's own reader.
Every samplesheet cell is first typed the way nf-schema types it (``tests/nextflow_nfschema.py``:
``151673`` is an integer, ``true`` a boolean, whatever column it is in), so the schema is checked
against the values nf-schema's validator really sees.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from nextflow_nfschema import NULL, rows_for_validation, samplesheet_to_list, string_to_value
from nextflow_render import REPO, read_params

from senca.errors import SencaError
from senca.io import samplesheet as senca_samplesheet

PARAMS_SCHEMA = REPO / "nextflow_schema.json"
INPUT_SCHEMA = REPO / "assets" / "schema_input.json"
DEMO_SHEET = REPO / "python" / "senca" / "data" / "demo" / "samplesheet.csv"
EXAMPLE_SHEET = REPO / "assets" / "samplesheet_example.csv"


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def schema_params(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every parameter of an nf-schema parameters schema (properties of each $defs group)."""
    params: dict[str, dict[str, Any]] = dict(schema.get("properties", {}))
    for group in schema.get("$defs", {}).values():
        params.update(group.get("properties", {}))
    return params


def params_errors(values: dict[str, Any]) -> list[str]:
    """Validate params as nf-schema does: null params are unset; unknown params are errors."""
    schema = load(PARAMS_SCHEMA)
    known = schema_params(schema)
    present = {k: (float(v) if type(v).__name__ == "Decimal" else v) for k, v in values.items() if v is not None}
    errors = [f"{k}: not a parameter of the pipeline" for k in present if k not in known]
    validator = jsonschema.Draft202012Validator(schema)
    errors += [f"{'/'.join(map(str, e.path)) or '(top)'}: {e.message}" for e in validator.iter_errors(present)]
    return errors


def read_sheet_rows(path: Path) -> list[dict[str, Any]]:
    """A samplesheet as nf-schema hands it to the schema: every cell typed by inference, empty ones left out."""
    return rows_for_validation(path)


def sheet_errors(path: Path) -> list[str]:
    """Every problem assets/schema_input.json finds in a samplesheet ('row N: column: message')."""
    schema = load(INPUT_SCHEMA)
    rows = read_sheet_rows(path)
    validator = jsonschema.Draft202012Validator(schema)
    errors = []
    for error in validator.iter_errors(rows):
        where = list(error.path)
        row = f"row {where[0] + 2}" if where else "sheet"
        column = where[1] if len(where) > 1 else "-"
        if error.validator == "required":  # reported on the row: name the missing column
            column = error.message.split("'")[1]
        errors.append(f"{row}: {column}: {error.message}")
    # nf-schema's own keyword (not JSON Schema): these columns must be unique across rows.
    for column in schema.get("uniqueEntries", []):
        seen: dict[Any, int] = {}
        for i, row in enumerate(rows, start=2):
            if column in row and row[column] in seen:
                errors.append(f"row {i}: {column}: duplicate of row {seen[row[column]]}")
            seen.setdefault(row.get(column), i)
    return errors


# ----------------------------------------------------------------------------------------------
# nextflow_schema.json
# ----------------------------------------------------------------------------------------------
def test_params_schema_is_a_valid_json_schema() -> None:
    schema = load(PARAMS_SCHEMA)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    groups = set(schema["$defs"])
    assert {ref["$ref"].rsplit("/", 1)[1] for ref in schema["allOf"]} == groups, "every group is referenced"


def test_every_config_param_is_in_the_schema_and_back() -> None:
    config = read_params(REPO / "nextflow.config")
    documented = schema_params(load(PARAMS_SCHEMA))
    assert sorted(set(config) - set(documented)) == [], "params missing from nextflow_schema.json"
    assert sorted(set(documented) - set(config)) == [], "schema params missing from nextflow.config"


def test_schema_defaults_equal_config_defaults() -> None:
    config = read_params(REPO / "nextflow.config")
    for name, spec in schema_params(load(PARAMS_SCHEMA)).items():
        value = config[name]
        if value is None:
            assert "default" not in spec, f"{name}: unset in nextflow.config but has a schema default"
        else:
            assert spec.get("default") == (float(value) if type(value).__name__ == "Decimal" else value), name


def test_every_param_has_description_and_help_text() -> None:
    for name, spec in schema_params(load(PARAMS_SCHEMA)).items():
        assert spec.get("description", "").strip(), f"{name}: no description"
        assert spec.get("help_text", "").strip(), f"{name}: no help_text"
        assert spec.get("type") in {"string", "integer", "number", "boolean"}, name


@pytest.mark.parametrize("profiles", [[], ["test"], ["gpu"], ["test", "gpu"]])
def test_profile_params_validate(profiles: list[str]) -> None:
    configs = [REPO / "nextflow.config"] + [REPO / "conf" / f"{p}.config" for p in profiles]
    values = read_params(*configs)
    if values["input"] is None:  # required on the command line unless a profile sets it
        values["input"] = "samplesheet.csv"
    assert params_errors(values) == []


@pytest.mark.parametrize(("name", "value", "fragment"), [
    ("encoder", "vgg16", "is not one of"),
    ("epochs", 0, "less than the minimum"),
    ("device", "tpu", "is not one of"),
    ("lr", -1.0, "less than or equal to the minimum"),
    ("input", "slides.xlsx", "does not match"),
    ("no_hierarchical", "yes", "is not of type 'boolean'"),
    ("image_choice", "medres", "is not one of"),
    ("image_choice", "fullres", "is not one of"),
    ("normalised", "yes", "is not of type 'boolean'"),
    ("not_a_param", 1, "not a parameter"),
])
def test_bad_params_are_rejected(name: str, value: Any, fragment: str) -> None:
    values = read_params(REPO / "nextflow.config") | {"input": "samplesheet.csv", name: value}
    errors = params_errors(values)
    assert any(fragment in e for e in errors), errors


# ----------------------------------------------------------------------------------------------
# assets/schema_input.json
# ----------------------------------------------------------------------------------------------
def test_samplesheet_schema_is_valid_and_matches_senca_reader() -> None:
    schema = load(INPUT_SCHEMA)
    jsonschema.Draft202012Validator.check_schema(schema)
    columns = set(schema["items"]["properties"])
    assert columns == set(senca_samplesheet.REQUIRED_COLUMNS + senca_samplesheet.OPTIONAL_COLUMNS)
    assert set(schema["items"]["required"]) == set(senca_samplesheet.REQUIRED_COLUMNS)
    assert schema["items"]["properties"]["sample"]["pattern"] == senca_samplesheet.SAMPLE_PATTERN.pattern
    assert schema["items"]["properties"]["sample"]["meta"] == ["id"]


@pytest.mark.parametrize("sheet", [DEMO_SHEET, EXAMPLE_SHEET], ids=["demo", "example"])
def test_bundled_samplesheets_pass(sheet: Path) -> None:
    if not sheet.is_file():
        pytest.skip(f"{sheet.relative_to(REPO)} not present yet")
    assert sheet_errors(sheet) == []
    # Relative paths resolve against the sheet's own folder (main.nf and senca do the same).
    for row in read_sheet_rows(sheet):
        for column in ("data", "image", "positions", "labels"):
            if column in row and not Path(row[column]).is_absolute():
                target = (sheet.parent / row[column]).resolve()
                if sheet == EXAMPLE_SHEET and not target.exists():
                    pytest.skip("the example sheet points at ../shared/data, absent here")
                assert target.exists(), f"{sheet.name}: {row['sample']}: {column} {target} missing"


BAD_ROWS = {
    "sample with a space": ("bad id,x.tsv.gz,,spots.tsv,,", "sample"),
    "no data": ("s1,,,,,", "data"),
    "bitmap image": ("s1,outs,he.bmp,,,", "image"),
    "unknown image keyword": ("s1,outs,medres,,,", "image"),
    "keyword with a suffix": ("s1,outs,hires.bmp,,,", "image"),
    "n_clusters of 1": ("s1,outs,,,,1", "n_clusters"),
    "n_clusters not a number": ("s1,outs,,,,many", "n_clusters"),
    "counts table without positions": ("s1,counts.tsv.gz,,,,", "positions"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_samplesheet_rows_are_rejected(case: str, tmp_path: Path) -> None:
    row, column = BAD_ROWS[case]
    sheet = tmp_path / "samplesheet.csv"
    sheet.write_text("sample,data,image,positions,labels,n_clusters\n" + row + "\n", encoding="utf-8")
    errors = sheet_errors(sheet)
    assert any(e.startswith(f"row 2: {column}:") for e in errors), errors
    # senca's own reader (used by `senca run` and `senca preprocess --samplesheet`) agrees.
    with pytest.raises(SencaError):
        senca_samplesheet.read_samplesheet(sheet)


def test_bad_samplesheet_reports_every_problem(tmp_path: Path) -> None:
    sheet = tmp_path / "samplesheet.csv"
    sheet.write_text("sample,data,image,positions,labels,n_clusters,colour\n"
                     "a,outs,,,,,red\n"
                     "a,outs,he.gif,,,0,\n"
                     "b c,counts.tsv,,,,,\n", encoding="utf-8")
    errors = sheet_errors(sheet)
    assert any(e.startswith("row 2: ") and "colour" in e for e in errors), errors  # unknown column
    assert any(e.startswith("row 3: sample: duplicate of row 2") for e in errors), errors
    assert any(e.startswith("row 3: image:") for e in errors), errors
    assert any(e.startswith("row 3: n_clusters:") for e in errors), errors
    assert any(e.startswith("row 4: sample:") for e in errors), errors
    assert any(e.startswith("row 4: positions:") for e in errors), errors


def test_params_image_choice_is_senca_image_choices() -> None:
    """--image_choice takes exactly senca's IMAGE_CHOICES; --normalised is a flag, off by default."""
    params = schema_params(load(PARAMS_SCHEMA))
    assert params["image_choice"]["type"] == "string" and params["image_choice"]["default"] == "auto"
    assert params["image_choice"]["enum"] == list(senca_samplesheet.IMAGE_CHOICES)
    assert params["normalised"]["type"] == "boolean" and params["normalised"]["default"] is False
    assert params_errors(read_params(REPO / "nextflow.config") | {"input": "s.csv", "image_choice": "none",
                                                                  "normalised": True}) == []


@pytest.mark.parametrize("keyword", ["hires", "lowres", "none", "auto", "HiRes", "NONE"])
def test_image_keywords_pass_for_slides_that_carry_images(keyword: str, tmp_path: Path) -> None:
    """The schema gives `image` no file-path format (nf-schema's `exists` would report the keyword as a
    missing file): a keyword passes, as it does senca's own reader, for a Space Ranger folder and an .h5ad."""
    (tmp_path / "outs").mkdir()
    (tmp_path / "slide.h5ad").write_bytes(b"")
    sheet = tmp_path / "samplesheet.csv"
    sheet.write_text(f"sample,data,image,positions,labels,n_clusters\nv1,outs,{keyword},,,\nh1,slide.h5ad,{keyword},,,\n",
                     encoding="utf-8")
    assert [row["image"] for row in read_sheet_rows(sheet)] == [keyword, keyword]  # text, not null or a path
    assert sheet_errors(sheet) == []
    specs = senca_samplesheet.read_samplesheet(sheet)
    assert [s.image_choice for s in specs] == [keyword.lower()] * 2 and all(s.image is None for s in specs)
    schema = load(INPUT_SCHEMA)["items"]["properties"]["image"]
    assert "format" not in schema and "exists" not in schema


@pytest.mark.parametrize(("keyword", "rejected"), [("none", False), ("auto", False), ("hires", True), ("LOWRES", True)])
def test_space_ranger_keywords_on_a_legacy_st_slide(keyword: str, rejected: bool, tmp_path: Path) -> None:
    """hires / lowres name a Space Ranger image: refused for a counts table, by the schema as by senca."""
    for name in ("counts.tsv.gz", "spots.tsv"):
        (tmp_path / name).write_bytes(b"")
    sheet = tmp_path / "samplesheet.csv"
    sheet.write_text(f"sample,data,image,positions,labels,n_clusters\nst1,counts.tsv.gz,{keyword},spots.tsv,,\n",
                     encoding="utf-8")
    errors = sheet_errors(sheet)
    assert bool(errors) == rejected, errors
    if rejected:
        assert any(e.startswith("row 2: ") for e in errors), errors
        with pytest.raises(SencaError, match="names a Space Ranger image"):
            senca_samplesheet.read_samplesheet(sheet)
    else:
        assert senca_samplesheet.read_samplesheet(sheet)[0].image_choice == keyword


def test_docs_samplesheet_example_passes() -> None:
    """docs/nextflow.md's samplesheet (image files and keywords) is one the schema accepts."""
    import re
    import tempfile

    docs = (REPO / "docs" / "nextflow.md").read_text(encoding="utf-8")
    block = re.search(r"```csv\n(.*?)```", docs, flags=re.S)
    assert block and ",none," in block.group(1) and ",lowres," in block.group(1)
    with tempfile.TemporaryDirectory() as folder:
        sheet = Path(folder) / "samplesheet.csv"
        sheet.write_text(block.group(1), encoding="utf-8")
        assert sheet_errors(sheet) == []


def test_good_rows_of_every_kind_pass(tmp_path: Path) -> None:
    sheet = tmp_path / "samplesheet.csv"
    sheet.write_text("sample,data,image,positions,labels,n_clusters\n"
                     "st_1,counts/A1.tsv.gz,A1.JPG,A1_selection.tsv,A1_labels.tsv,6\n"
                     "visium.151673,151673/outs,,,labels.csv,7\n"
                     "h5ad-1,slide.h5ad,he.tiff,,,\n", encoding="utf-8")
    assert sheet_errors(sheet) == []


# ----------------------------------------------------------------------------------------------
# nf-schema's typing of every cell
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "value"), [
    ("151673", 151673), ("-5", -5), ("0", 0), ("12345678901234567890", 12345678901234567890),
    ("007", "007"), ("-01", "-01"),                        # leading zeros: org.json refuses, text stays
    ("1.5", Decimal("1.5")), ("1e5", Decimal("1e5")), ("2.", Decimal("2")), ("-0", -0.0),
    ("true", True), ("FALSE", False), ("null", NULL),
    ("+5", "+5"), ("0x1F", "0x1F"), ("1-2", "1-2"), ("A1", "A1"), ("151673_band", "151673_band"),
    ("NaN", "NaN"), ("-Infinity", "-Infinity"),
    ("none", "none"), ("None", "None"), ("hires", "hires"), ("lowres", "lowres"), ("auto", "auto"),  # image keywords stay text
])
def test_cells_are_typed_as_org_json_types_them(text: str, value: Any) -> None:
    got = string_to_value(text)
    assert got == value and type(got) is type(value), (text, got)


def test_numeric_sample_ids_pass_and_keep_their_text(tmp_path: Path) -> None:
    sheet = tmp_path / "samplesheet.csv"
    sheet.write_text("sample,data,image,positions,labels,n_clusters\n"
                     "151673,151673,,,labels.csv,7\n"
                     "151674,dlpfc/151674/outs,,,,\n"
                     "-3,slide.h5ad,,,,\n", encoding="utf-8")
    rows = read_sheet_rows(sheet)
    assert [type(r["sample"]) for r in rows] == [int, int, int] and type(rows[0]["data"]) is int
    assert sheet_errors(sheet) == []
    # what main.nf receives, and turns into meta.id.toString(): the text as written
    listed = samplesheet_to_list(sheet, INPUT_SCHEMA)
    assert [str(row[0]["id"]) for row in listed] == ["151673", "151674", "-3"]
    assert listed[1][0]["n_clusters"] == [] and listed[0][0]["n_clusters"] == 7


@pytest.mark.parametrize("sample", ["1.5", "1.25e-3", "true", "null"])
def test_ids_nf_schema_would_turn_into_other_values_are_refused(sample: str, tmp_path: Path) -> None:
    """Fractional numbers, booleans and null would not survive as the same id: the schema refuses
    them, with the message saying what to do. (Whole numbers written as decimals, 1e5 or 2., are
    JSON integers to the schema; main.nf refuses those: tests/test_nextflow_config.py.)"""
    sheet = tmp_path / "samplesheet.csv"
    sheet.write_text(f"sample,data,image,positions,labels,n_clusters\n{sample},outs,,,,\n", encoding="utf-8")
    errors = sheet_errors(sheet)
    assert any(e.startswith("row 2: sample:") for e in errors), errors
    assert "add a letter" in load(INPUT_SCHEMA)["items"]["properties"]["sample"]["errorMessage"]


def test_every_column_accepts_what_nf_schema_makes_of_valid_text(tmp_path: Path) -> None:
    """For each column, a value senca's own reader accepts must still pass once nf-schema has typed
    it: the schema's types cover the inferred type of every such cell in the bundled sheets and the
    numeric cases (an all-digit sample or data folder)."""
    properties = load(INPUT_SCHEMA)["items"]["properties"]
    json_type = {bool: "boolean", int: "integer", float: "number", Decimal: "number", str: "string"}
    sheets = [p for p in (DEMO_SHEET, EXAMPLE_SHEET) if p.is_file()]
    numeric = tmp_path / "numeric.csv"
    numeric.write_text("sample,data,image,positions,labels,n_clusters\n151673,151673,he.png,spots.tsv,labels.csv,7\n")
    for sheet in [*sheets, numeric]:
        for row in read_sheet_rows(sheet):
            for column, value in row.items():
                allowed = properties[column]["type"]
                allowed = allowed if isinstance(allowed, list) else [allowed]
                assert json_type[type(value)] in allowed, f"{sheet.name}: {column}={value!r} is {json_type[type(value)]}"
