"""``python -m genworld`` (and ``torchrun -m genworld``): the ``genworld`` command line."""

import sys

from genworld.cli import main

if __name__ == "__main__":
    sys.exit(main())
