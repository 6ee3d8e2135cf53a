"""senca: region identification in cancer slides from spatial transcriptomics + H&E (SENCA-st)."""

__version__ = "0.1.0"

# Artifacts written by a senca whose major.minor differs from this are refused (see senca.io.artifacts).
ARTIFACT_FORMAT = "1"
