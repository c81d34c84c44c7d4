"""The one exception type for user errors: the CLI prints it as `error: …` and exits 2."""


class MigmError(Exception):
    """Raised for bad input or bad files; the message says what to fix."""
