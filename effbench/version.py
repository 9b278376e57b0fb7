"""The version of effbench, in one place (the package, the records' provenance and the CLI read it)."""

__version__ = "0.1.0"
