"""UserError: a mistake on the command line or in a config, told in one message."""


class UserError(Exception):
    """Printed as `vggspec: error: <message>` with exit status 2, never as a traceback."""
