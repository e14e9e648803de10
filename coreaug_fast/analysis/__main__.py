"""Entry point of ``python -m coreaug_fast.analysis``."""
import sys

from .cli import main

sys.exit(main())
