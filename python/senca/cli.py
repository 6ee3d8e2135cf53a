"""The ``senca`` command: a thin click group; each stage lives in ``senca.commands.<stage>``.

Commands are imported lazily so ``senca --help`` and ``senca --version`` answer in a fraction of a
second without importing torch or scanpy.
"""

from __future__ import annotations

import importlib

import click

from senca import __version__

# command name -> (module, attribute, one-line help shown by `senca --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "preprocess": ("senca.commands.preprocess", "preprocess", "Read a slide, filter/normalise genes, pick HVGs, build the spatial graph."),
    "embed-patches": ("senca.commands.embed_patches", "embed_patches", "Embed an H&E patch around every spot with a pretrained CNN."),
    "train-senca": ("senca.commands.train_senca", "train_senca", "Train the SENCA-st model on one slide; write the shared embedding S."),
    "cluster": ("senca.commands.cluster", "cluster", "Agglomerative (Ward) clustering of S; figures and the final .h5ad."),
    "markers": ("senca.commands.markers", "markers", "Marker genes per cluster (Wilcoxon, BH-adjusted)."),
    "evaluate": ("senca.commands.evaluate", "evaluate", "ARI/NMI against labels; cohort summary and HTML report."),
    "run": ("senca.commands.run", "run", "Run every stage for every slide of a samplesheet on this machine."),
    "containers": ("senca.commands.containers", "containers", "Build or check the senca container images (docker)."),
}


class LazyGroup(click.Group):
    """A click group that imports a command's module only when that command is invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, attribute, _ = COMMANDS[cmd_name]
        return getattr(importlib.import_module(module_name), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_text) for name, (_, _, help_text) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="senca")
def main() -> None:
    """senca: find tissue regions in cancer slides from spatial transcriptomics and H&E (SENCA-st).

    Stages pass Parquet/PyTorch files; `senca run` chains them on one machine, the Nextflow
    pipeline (main.nf) runs them as a cohort on HPC or cloud.
    """


if __name__ == "__main__":
    main()
