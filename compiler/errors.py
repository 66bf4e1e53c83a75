"""VggspecError: the base of every error that is the user's to fix (imports nothing)."""


class VggspecError(Exception):
    """Base of every error that is the user's to fix (a spec, a file, a setting):
    the command line prints its message and exits 2, never a traceback."""
