"""Rules every run must keep, checked at run time: unlike `assert`, they hold under `python -O`."""


class BrokenInvariant(RuntimeError):
    """A rule every run must keep was broken: a bug in the pipeline, never bad input."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise BrokenInvariant(message)
