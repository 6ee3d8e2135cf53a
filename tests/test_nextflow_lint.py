"""Every .nf and .config file of the repository, checked by Nextflow's own parser.

The Nextflow language server (fetched by ``scripts/fetch_nextflow_lsp.sh``, pinned and checksummed)
parses each file and runs its semantic checks; any error-severity diagnostic fails the suite with
``file:line:column: message``, and so does any deprecation (those are fixed in the code, not
tolerated). Other warnings are printed. Where the server cannot run (no Java, no package registry
to fetch it from) the tests are skipped with that reason, never passed silently.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from nextflow_lsp import (
    REPO,
    Diagnostic,
    find_sources,
    jar_or_skip,
    lint,
)

# Messages for constructs Nextflow is phasing out (the server's "future" warnings).
DEPRECATION = re.compile(r"deprecated|will not be supported|no longer supported|future version", re.I)
# What must be among the parsed files: a pipeline with fewer files was not found whole.
EXPECTED = ["main.nf", "workflows/senca.nf", "nextflow.config", "conf/base.config", "conf/modules.config",
            "conf/test.config", "conf/gpu.config"] + [f"modules/local/{m}/main.nf" for m in
                                                       ("preprocess", "embed_patches", "train_senca", "cluster", "markers", "evaluate")]


@pytest.fixture(scope="module")
def jar() -> Path:
    return jar_or_skip("nextflow-lint")


def gate(root: Path, jar: Path, files: list[Path] | None = None) -> tuple[str, list[Diagnostic], list[Diagnostic]]:
    """Lint ``root``; return (summary line + listing, failures, all diagnostics)."""
    results = lint(root, files, jar=jar)
    diagnostics = [d for ds in results.values() for d in ds]
    failures = [d for d in diagnostics if d.is_error or DEPRECATION.search(d.message)]
    errors = sum(d.is_error for d in diagnostics)
    lines = [d.render(root) for d in diagnostics]
    lines.append(f"nextflow-lint: {len(results)} files parsed, {errors} errors, "
                 f"{len(diagnostics) - errors} warnings")
    return "\n".join(lines), failures, diagnostics


def test_repository_nextflow_code_has_no_errors(jar: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = find_sources(REPO)
    relative = {f.relative_to(REPO).as_posix() for f in files}
    assert set(EXPECTED) <= relative, f"pipeline files not found: {sorted(set(EXPECTED) - relative)}"
    report, failures, _ = gate(REPO, jar, files)
    with capsys.disabled():
        print("\n" + report)
    assert not failures, "Nextflow language server:\n" + "\n".join(d.render(REPO) for d in failures)


def _break_copy(root: Path) -> dict[str, tuple[Path, int]]:
    """Copy the pipeline into ``root`` and add broken files; return {kind: (file, 1-based line)}.

    Two broken copies of the cluster module, one with a syntax error (a stray comma) and one with
    an undefined variable (a syntax error stops the parser before name resolution, so each needs
    its own file), a script using the deprecated ``Channel`` and a config defining a function.
    """
    for name in ("main.nf", "nextflow.config", "nextflow_schema.json"):
        shutil.copy2(REPO / name, root / name)
    for folder in ("conf", "modules", "workflows"):
        shutil.copytree(REPO / folder, root / folder)
    source = (REPO / "modules/local/cluster/main.nf").read_text(encoding="utf-8").splitlines()
    where: dict[str, tuple[Path, int]] = {}

    def write(relative: str, lines: list[str], kind: str, line: int) -> None:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        where[kind] = (path.resolve(), line + 1)

    syntax = list(source)
    line = next(i for i, text in enumerate(syntax) if "label 'process_low'" in text)
    syntax[line] += ",,"
    write("modules/local/broken_syntax/main.nf", syntax, "syntax", line)

    undefined = list(source)
    line = next(i for i, text in enumerate(undefined) if "def image_arg" in text)
    undefined[line] = undefined[line].replace("image ? ", "imgae ? ", 1)
    assert "imgae" in undefined[line]
    write("modules/local/broken_name/main.nf", undefined, "undefined", line)

    write("deprecated.nf", ["workflow {", "    Channel.of(1, 2).view()", "}"], "deprecated", 1)
    write("conf/broken.config", ["params {", "    x = 1", "}", "def helper() { 1 }"], "config", 3)
    return where


def test_gate_reports_each_deliberate_error_with_its_line(jar: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    where = _break_copy(tmp_path)
    report, failures, _ = gate(tmp_path, jar)
    with capsys.disabled():
        print("\n[a deliberately broken copy: the gate must fail]\n" + report)
    assert failures, "the gate passed a broken copy"

    def failures_in(kind: str) -> list[tuple[int, str]]:
        return [(d.line, d.message) for d in failures if d.path == where[kind][0]]

    [(line, message)] = failures_in("syntax")
    assert line == where["syntax"][1] and "Unexpected input: ','" in message, report
    assert failures_in("undefined") == [(where["undefined"][1], "`imgae` is not defined")], report
    [(line, message)] = failures_in("deprecated")
    assert line == where["deprecated"][1] and DEPRECATION.search(message), report
    [(line, _)] = failures_in("config")
    assert line == where["config"][1], report
    # The intact files of the copy stay clean: the gate points at the broken ones only.
    assert {d.path for d in failures} == {path for path, _ in where.values()}, report
