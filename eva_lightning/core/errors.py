"""The exceptions a user sees as a plain message (no stack trace)."""


class EvaError(Exception):
    """A problem with the user's input or environment (cause and fix); ``eva`` prints ``error: <message>``, exits 2."""


#: ``eva``'s exit status after a SIGTERM: 128 + 15, what a shell reports for a process that signal ended
EXIT_PREEMPTED = 143


class Preempted(SystemExit):
    """The run stopped on SIGTERM (a scheduler's preemption) after saving what it could; ``eva`` prints
    ``stopped: <message>`` and exits :data:`EXIT_PREEMPTED` (uncaught, Python exits with it silently)."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_PREEMPTED)
        self.message = message

    def __str__(self) -> str:
        return self.message


def first_cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first ``kind`` in ``exc``'s chain of causes and contexts (``exc`` itself included), if any."""
    seen = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, kind):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None
