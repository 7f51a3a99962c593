"""The one exception type a user sees as a plain message (no stack trace)."""


class EvaError(Exception):
    """A problem with the user's input or environment (cause and fix); ``eva`` prints ``error: <message>``, exits 2."""
