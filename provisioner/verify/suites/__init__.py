"""pytest-testinfra suites that `rigctl verify` runs against inventory hosts (see plugin.py)."""


class Failure(Exception):
    """A check failed: ``str(exc)`` is the user's one line, naming host, check and reason."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint
