"""pydantic's validation errors and unknown item keys, said as Problems that name the field and what to do."""

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from noether.explorer.problems import Problem, did_you_mean

_HINTS = {
    "missing": "Add it.",
    "int_parsing": "Use a whole number.",
    "int_from_float": "Use a whole number.",
    "int_type": "Use a whole number.",
    "float_parsing": "Use a number.",
    "float_type": "Use a number.",
    "bool_parsing": "Use true or false.",
    "bool_type": "Use true or false.",
    "string_type": "Use a text value.",
    "list_type": "Use a list, e.g. [a, b].",
    "dict_type": "Use a mapping of name: value.",
    "model_type": "Use a mapping of field: value.",
    "greater_than_equal": "Use a larger value.",
    "less_than_equal": "Use a smaller value.",
    "sequence_str": "Write a list, e.g. [surface_anchors].",
    "string_pattern_mismatch": "Use auto, cpu, cuda, cuda:N or mps.",
    "literal_error": "Use one of the listed values.",
    "too_short": "Add at least one entry.",
}


def _location(prefix: str, loc: Sequence[int | str]) -> str:
    text = prefix
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


_PYDANTIC_PHRASES = (
    ("Input should be greater than or equal to", "must be at least"),
    ("Input should be less than or equal to", "must be at most"),
    ("Input should be greater than", "must be more than"),
    ("Input should be less than", "must be less than"),
    ("Input should be a valid integer, unable to parse string as an integer", "must be a whole number"),
    ("Input should be a valid integer, got a number with a fractional part", "must be a whole number"),
    ("Input should be a valid integer", "must be a whole number"),
    ("Input should be a valid number, unable to parse string as a number", "must be a number"),
    ("Input should be a valid", "must be a"),
    ("Input should be", "must be"),
    ("List should have at least 1 item after validation", "must not be empty"),
    ("List should have", "must have"),
    ("String should match pattern", "must match the pattern"),
    ("String should have", "must have"),
    ("Field required", "is missing."),
)


def _plain(message: str) -> str:
    """pydantic's phrasing ("Input should be ...", "after validation") in the words of the rest of the messages."""
    for phrase, plain in _PYDANTIC_PHRASES:
        if message.startswith(phrase):
            message = plain + message[len(phrase) :]
            break
    return message.replace(" items after validation", " items").replace(" item after validation", " item")


def _pydantic_problems(exc: ValidationError, prefix: str, known_fields: Sequence[str] = ()) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = [part for part in err["loc"] if part not in ("function-before[_token_items(), list[TokenSpec]]",)]
        where = _location(prefix, loc)
        message = _plain(err["msg"])
        if err["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        elif err["type"] not in ("missing", "extra_forbidden") and "input" in err:
            message = f"{message}, got {err['input']!r}."
        hint = _HINTS.get(err["type"], "")
        if err["type"] == "extra_forbidden":
            message = "unknown field."
            hint = (did_you_mean(str(loc[-1]), known_fields) + " Remove or rename it.").strip()
        problems.append(Problem(where, message, hint))
    return problems


def _parse(model: type[BaseModel], data: Any, prefix: str) -> tuple[Any, list[Problem]]:
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, _pydantic_problems(exc, prefix, list(model.model_fields))


def _unknown_item_keys(item: Any, allowed: Sequence[str], where: str) -> list[Problem]:
    """Upstream's item models ignore unknown keys; here they are most likely typos or wishes, so say so."""
    if not isinstance(item, Mapping):
        return []
    return [
        Problem(
            f"{where}.{key}",
            "unknown field.",
            (did_you_mean(str(key), allowed) + f" Allowed: {list(allowed)}.").strip(),
        )
        for key in item
        if key not in allowed
    ]
