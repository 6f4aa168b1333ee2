"""`python -m wav2lip` is the `wav2lip` command."""
import sys

from .cli import main

sys.exit(main())
