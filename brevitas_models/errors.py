"""The models' one error type for bad input (argument, tensor shape, checkpoint file, config).

``brevitas_models`` imports nothing from the flow (``tatvpr_hw``) or the simulator (``sim``);
the flow's :class:`tatvpr_hw.errors.UserError` subclasses :class:`ModelInputError`, so the
``tatvpr`` CLI prints either as one ``error:`` line and exits with status 2.
"""


class ModelInputError(ValueError):
    """Bad input to a model function: one clear message naming the value and what is allowed."""
