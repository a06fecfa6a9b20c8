"""User-facing errors.

Everything a user can get wrong (a path, a class list, a model id) raises :class:`PnpOvssError`
with a one-line message that says what was wrong and what to do; the CLI prints exactly that line
and exits non-zero instead of showing a traceback.
"""


class PnpOvssError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    reported_by: str | None = None
    """Under torchrun, an error every process raises alike (checks whose results the processes
    gather, a device missing on the machine) names the rank variable (``RANK`` or ``LOCAL_RANK``)
    whose process 0 alone prints it, so the user reads one line, not one per process."""


def raised_alike(exc: PnpOvssError, by: str = "RANK") -> PnpOvssError:
    """``exc``, marked as raised alike by every process (see :attr:`PnpOvssError.reported_by`)."""
    exc.reported_by = by
    return exc


class ModelLoadError(PnpOvssError):
    """A model source could not be resolved or loaded."""


class ImageLoadError(PnpOvssError):
    """An input image could not be read or converted to RGB."""


class ConfigError(PnpOvssError):
    """A pipeline option (preset, ``--set``, API keyword, search space) of the wrong type or range."""
