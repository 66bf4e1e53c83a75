"""UserError: a mistake on the command line or in a config, told in one message."""

from compiler.errors import VggspecError


class UserError(VggspecError):
    """Printed as `vggspec: error: <message>` with exit status 2, never as a traceback."""
