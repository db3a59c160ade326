"""User-facing errors: the CLI prints them as one line and exits with status 2."""

from brevitas_models.errors import ModelInputError


class UserError(ModelInputError):
    """Bad input from the user (config, file, argument): one clear message, no traceback.

    A subclass of the models' :class:`~brevitas_models.errors.ModelInputError` (the models
    import nothing from the flow): catch ``ModelInputError`` where an error may come from
    either, as the CLI does (with the simulator's ``SimInputError``).
    """
