"""``python -m leantrain ...`` (and ``torchrun -m leantrain ...``) runs the command line."""

import sys

from leantrain.cli import main

if __name__ == "__main__":
    sys.exit(main())
