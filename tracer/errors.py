"""The one exception type the CLI turns into a one-line message and exit status 2."""


class PktfateError(Exception):
    """An expected failure: bad input, missing privilege or kernel feature.

    The message says what to do; the CLI prints it without a traceback.
    """
