"""The command line: argument parsing, exit codes and printing; the logic lives in the Python API."""
from effbench.cli.app import main

__all__ = ["main"]
