"""The samplesheet: one row per slide, validated whole before any work starts.

Columns (ARCHITECTURE.md): ``sample`` (unique, ``[A-Za-z0-9_.-]+``), ``data`` (Space Ranger ``outs/``,
``.h5ad`` or legacy-ST counts ``.tsv[.gz]``), and optional ``image``, ``positions``, ``labels``,
``n_clusters``. Relative paths are resolved against the samplesheet's own folder, so a sheet can be
moved together with its data. Every bad row is reported at once (row, column, reason) so a user fixes
a 200-slide sheet in one pass, not 200.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, replace
from pathlib import Path

from senca.errors import SencaError

REQUIRED_COLUMNS = ("sample", "data")
OPTIONAL_COLUMNS = ("image", "positions", "labels", "n_clusters")
SAMPLE_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
IMAGE_CHOICES = ("auto", "hires", "lowres", "none")
"""``image`` keywords (and ``--image-choice`` values): ``auto`` the best image that passes QC (the default,
full-res > hires > lowres > none), ``hires`` / ``lowres`` that Space Ranger (or ``uns['spatial']``) image,
``none`` image-less even when the data carry an image."""


@dataclass(frozen=True)
class SlideSpec:
    """One validated samplesheet row: absolute paths, or None where the column is empty."""

    sample: str
    data: Path
    image: Path | None = None
    positions: Path | None = None
    labels: Path | None = None
    n_clusters: int | None = None
    image_choice: str = "auto"  # one of IMAGE_CHOICES; a samplesheet image path is "auto" (QC, then fallback)
    normalised: bool = False  # --normalised: values are already log-normalised (non-integers accepted)

    @property
    def kind(self) -> str:
        """Which reader this slide needs: ``visium`` (outs/), ``h5ad`` or ``st`` (counts table)."""
        return data_kind(self.data)


def data_kind(path: Path) -> str:
    """Classify a ``data`` path by its shape: a folder is Space Ranger outs/, else by suffix."""
    name = path.name.lower()
    if path.is_dir():
        return "visium"
    if name.endswith(".h5ad"):
        return "h5ad"
    if name.endswith((".tsv", ".tsv.gz", ".txt", ".txt.gz", ".csv", ".csv.gz")):
        return "st"
    raise SencaError("data must be a Space Ranger outs/ folder, an .h5ad, or a counts .tsv[.gz]", path)


def with_image_choice(spec: SlideSpec, image_choice: str) -> SlideSpec:
    """``spec`` with a run-wide ``--image-choice`` applied, unless its own ``image`` cell decides.

    A keyword in the cell always wins; ``none`` also overrides an image file (run every slide
    image-less); ``hires`` / ``lowres`` apply only where the slide has no image file of its own and
    can carry those images (Space Ranger, .h5ad), so a cohort mixing legacy ST and Visium can say
    ``--image-choice lowres`` once.
    """
    if image_choice == "auto" or spec.image_choice != "auto":
        return spec
    if image_choice == "none":
        return replace(spec, image=None, image_choice="none")
    if spec.image is not None or spec.kind == "st":
        return spec
    return replace(spec, image_choice=image_choice)



def _check_row(row: dict[str, str], base: Path) -> tuple[SlideSpec | None, list[str]]:
    """Validate one row; return the spec (when valid) and a list of 'column: reason' problems."""
    problems: list[str] = []

    def path_of(column: str, required: bool) -> Path | None:
        value = (row.get(column) or "").strip()
        if not value:
            if required:
                problems.append(f"{column}: empty")
            return None
        try:
            path = Path(value).expanduser()
            path = path if path.is_absolute() else (base / path)
            if not path.exists():
                problems.append(f"{column}: file not found: {path}")
                return None
            return path.resolve()
        except (OSError, RuntimeError) as exc:  # a name too long, an unknown ~user, a loop of links...
            problems.append(f"{column}: cannot use path {value!r} ({type(exc).__name__}: {exc})")
            return None

    sample = (row.get("sample") or "").strip()
    if not sample:
        problems.append("sample: empty")
    elif not SAMPLE_PATTERN.match(sample):
        problems.append(f"sample: {sample!r} must match [A-Za-z0-9_.-]+")
    data = path_of("data", required=True)
    kind: str | None = None
    if data is not None:
        try:
            kind = data_kind(data)
        except SencaError as exc:
            problems.append(f"data: {exc}")
    keyword = (row.get("image") or "").strip().lower()
    image_choice = keyword if keyword in IMAGE_CHOICES else "auto"
    image = None if keyword in IMAGE_CHOICES else path_of("image", required=False)
    if image is not None and (image.is_dir() or not image.name.lower().endswith(IMAGE_SUFFIXES)):
        problems.append(f"image: {image.name} is not a jpg/png/tif image (or one of {', '.join(IMAGE_CHOICES)})")
    if image_choice in ("hires", "lowres") and kind == "st":
        problems.append(f"image: {image_choice!r} names a Space Ranger image; a legacy ST slide has only the H&E "
                        "file you give (or none)")
    positions = path_of("positions", required=False)
    labels = path_of("labels", required=False)
    n_clusters: int | None = None
    raw_k = (row.get("n_clusters") or "").strip()
    if raw_k:
        try:
            n_clusters = int(raw_k)
            if n_clusters < 2:
                raise ValueError
        except ValueError:
            problems.append(f"n_clusters: {raw_k!r} is not an integer >= 2")
    if kind == "st" and positions is None and not problems:
        problems.append("positions: required for a legacy ST counts table (spot file with pixel_x/pixel_y)")
    if problems:
        return None, problems
    assert data is not None
    return SlideSpec(sample, data, image, positions, labels, n_clusters, image_choice), []


def read_samplesheet(path: str | Path) -> list[SlideSpec]:
    """Parse and validate a samplesheet; raise one SencaError listing every bad row."""
    path = Path(path)
    if not path.is_file():
        raise SencaError("samplesheet not found", path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SencaError(f"not UTF-8 text (byte {exc.start})", path) from None
    try:
        return _parse(text, path)
    except csv.Error as exc:  # e.g. a field over csv's size limit: not a samplesheet
        raise SencaError(f"malformed CSV ({exc})", path) from None


def _parse(text: str, path: Path) -> list[SlideSpec]:
    """Check the header, then every row (problems collected, not raised one by one)."""
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise SencaError(f"column(s) {', '.join(map(repr, repeated))} appear more than once in the header", path)
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise SencaError(f"missing required column(s) {', '.join(missing)} (has: {', '.join(header) or 'nothing'})", path)
    unknown = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        raise SencaError(f"unknown column(s) {', '.join(unknown)}; allowed: {', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}", path)
    base = path.resolve().parent
    specs: list[SlideSpec] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for line_no, row in enumerate(reader, start=2):
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue  # blank line
        if None in row:
            problems.append(f"row {line_no}: more fields than columns")
            continue
        spec, row_problems = _check_row(row, base)
        sample = (row.get("sample") or "").strip()
        if sample and sample in seen:
            row_problems.append(f"sample: duplicate of row {seen[sample]}")
        elif sample:
            seen[sample] = line_no
        problems.extend(f"row {line_no}, {p}" for p in row_problems)
        if spec is not None and not row_problems:
            specs.append(spec)
    if problems:
        raise SencaError(f"{len(problems)} problem(s): " + "; ".join(problems), path)
    if not specs:
        raise SencaError("no slides listed", path)
    return specs
