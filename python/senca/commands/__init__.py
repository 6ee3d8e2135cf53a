"""One module per ``senca`` command: argument parsing, progress and errors over a pure function."""
