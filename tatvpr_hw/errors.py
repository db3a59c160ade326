"""User-facing errors: the CLI prints them as one line and exits with status 2."""


class UserError(ValueError):
    """Bad input from the user (config, file, argument): one clear message, no traceback."""
