"""``python -m tokred.cli`` (e.g. under ``torchrun``) = the ``tokred`` command."""

import sys

from tokred.cli import main

sys.exit(main())
