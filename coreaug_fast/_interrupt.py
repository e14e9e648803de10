"""Ctrl-C while a command line is still importing (torch takes a second or two) ends in one
line and exit status 130, not a traceback through torch's import machinery.

The command lines catch KeyboardInterrupt themselves once they run; this covers the moment
before, when ``coreaug_fast`` is being imported on their behalf. It is installed only when
this process *is* one of them (the ``coreaug-train`` script, or ``python -m
coreaug_fast.train`` / ``coreaug_fast.analysis``): a program that merely imports the library
keeps Python's own handling. Imports nothing heavy, so it can run first.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

_MODULES = {"coreaug_fast.train": "coreaug-train", "coreaug_fast.train.cli": "coreaug-train",
            "coreaug_fast.analysis": "python -m coreaug_fast.analysis",
            "coreaug_fast.analysis.cli": "python -m coreaug_fast.analysis"}
_SCRIPTS = {"coreaug-train", "coreaug-train.exe", "coreaug-train-script.py"}


def program() -> Optional[str]:
    """The command line this process runs, or None when it is not one of ours."""
    if sys.argv and os.path.basename(sys.argv[0]) in _SCRIPTS:
        return "coreaug-train"
    argv = list(getattr(sys, "orig_argv", []))  # Python >= 3.10: sys.argv[0] is "-m" while importing
    for i, arg in enumerate(argv[:-1]):
        if arg == "-m":
            return _MODULES.get(argv[i + 1])
    return None


def install() -> None:
    """For one of our command lines: make an uncaught KeyboardInterrupt print
    ``<program>: interrupted`` and exit with status 130 (128 + SIGINT, as a shell reports)."""
    prog = program()
    if prog is None:
        return
    previous = sys.excepthook

    def hook(kind, value, tb):
        if not issubclass(kind, KeyboardInterrupt):
            return previous(kind, value, tb)
        try:
            sys.stdout.flush()
            sys.stderr.write(f"{prog}: interrupted\n")
            sys.stderr.flush()
        finally:
            os._exit(130)

    sys.excepthook = hook
