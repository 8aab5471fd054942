"""The one user-facing error of model conversion."""

from titan.core.errors import TitanError


class ConversionError(TitanError):
    """A checkpoint or config titan cannot convert; the message says why and what to do.

    A :class:`TitanError`, so the CLI prints it on one line and exits 2.
    """
