"""``python -m engine`` — the same as the ``voice-engine`` command."""

import sys

from engine.cli import main

sys.exit(main())
