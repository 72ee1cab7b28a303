"""drnn's exceptions.

Every error drnn raises because of what a caller passed or a file contained
is a DrnnError, so services can tell drnn's errors apart from their own.
Each subclass also derives from the built-in exception people already catch
(ValueError, TypeError), so ``except ValueError`` keeps working.
"""


class DrnnError(Exception):
    """Base class of every error drnn raises on bad input."""


class ShapeError(DrnnError, ValueError):
    """An array has the wrong rank, size or shape."""


class DtypeError(DrnnError, TypeError):
    """An array has a dtype drnn cannot use."""


class FormatError(DrnnError, ValueError):
    """A file is corrupt, truncated, hostile, or not in the expected format."""


class UnsupportedError(DrnnError, ValueError):
    """A layer, activation or option drnn does not support."""
