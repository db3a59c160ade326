"""Errors the simulator raises for bad input files (trace, hardware description, sweep)."""


class SimInputError(ValueError):
    """A malformed or out-of-range simulator input; the message names the file and field."""
