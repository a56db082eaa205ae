"""genworld: multi-environment offline RL with generalist world models.

Importing the package has no side effects (no torch flags, no environment variables).
"""

__version__ = "0.1.0"

from genworld.errors import GenworldError  # noqa: E402

__all__ = ["GenworldError", "__version__"]
