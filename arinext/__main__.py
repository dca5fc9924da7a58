"""``python -m arinext`` (what ``torchrun -m arinext train ...`` runs)."""

import sys

from arinext.cli import main

sys.exit(main())
