"""``python -m genworld.cli``: the same as ``genworld``."""

import sys

from genworld.cli import main

if __name__ == "__main__":
    sys.exit(main())
