"""The project's exceptions: inside ck_plugins errors are exceptions; the CK edge turns them into dicts."""


class BadInput(ValueError):
    """A value given by the user is not one we accept. The message names the value and what was expected."""

    def __init__(self, what: str, value: object, expected: str):
        self.what, self.value, self.expected = what, value, expected
        super().__init__(f"{what} {value!r} is not valid; expected {expected}")


class Unsupported(RuntimeError):
    """A configuration that cannot run here (no GPU, TensorRT missing, ...). Recorded as a failed point."""


def check_choice(what: str, value: str, accepted) -> str:
    accepted = list(accepted)
    if value not in accepted:
        raise BadInput(what, value, "one of " + ", ".join(accepted))
    return value


def check_positive_int(what: str, value) -> int:
    return _positive(what, value, int, "a positive integer")


def check_positive_float(what: str, value) -> float:
    return _positive(what, value, float, "a positive number")


def _positive(what: str, value, kind: type, expected: str):
    """`value` read as `kind`, above 0 and finite, else BadInput naming it."""
    try:
        number = kind(str(value).strip())
    except ValueError:
        raise BadInput(what, value, expected) from None
    if not 0 < number < float("inf"):
        raise BadInput(what, value, expected)
    return number
