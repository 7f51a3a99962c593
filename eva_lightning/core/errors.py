"""The one exception type a user sees as a plain message (no stack trace)."""


class EvaError(Exception):
    """A problem with the user's input or environment: the message says the cause and the fix.

    ``eva`` prints it as ``error: <message>`` and exits with status 2.
    """
