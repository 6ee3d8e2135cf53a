"""Reading user inputs (Space Ranger, h5ad, legacy ST, samplesheets) and senca's own artifacts."""
