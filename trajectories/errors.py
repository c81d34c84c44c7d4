"""The one exception type for user errors: the CLI prints it as `error: …` and exits 2."""


class MigmError(Exception):
    """Raised for bad input or bad files; the message says what to fix."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (at most 160 characters), else its type's name."""
    text = str(e).strip()
    return (text.splitlines()[0][:160] if text else type(e).__name__) or type(e).__name__


def write_error(e: Exception) -> str:
    """The reason a write failed, short: an OSError's own text, or the I/O error inside the error
    safetensors raises for a full disk or a read-only folder ("No space left on device (os error 28)")."""
    if isinstance(e, OSError):
        return e.strerror or str(e)
    return str(e).rpartition("I/O error: ")[2] or str(e)
