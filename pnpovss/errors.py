"""User-facing errors.

Everything a user can get wrong (a path, a class list, a model id) raises :class:`PnpOvssError`
with a one-line message that says what was wrong and what to do; the CLI prints exactly that line
and exits non-zero instead of showing a traceback.
"""


class PnpOvssError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class ModelLoadError(PnpOvssError):
    """A model source could not be resolved or loaded."""


class ImageLoadError(PnpOvssError):
    """An input image could not be read or converted to RGB."""


class ConfigError(PnpOvssError):
    """A pipeline option (preset, ``--set``, API keyword, search space) of the wrong type or range."""
