"""`python -m hwnas ...` (and `torchrun -m hwnas search ...`): the console script."""

from __future__ import annotations

import sys

from hwnas.cli import main

if __name__ == "__main__":
    sys.exit(main())
