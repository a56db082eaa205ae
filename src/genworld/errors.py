"""One exception type for every user-facing problem.

Its message is a single line that names the problem and the fix; the CLI prints it without a
traceback and exits non-zero.
"""


class GenworldError(Exception):
    """A problem the user can fix: bad input, corrupt file, unknown name, existing output."""
