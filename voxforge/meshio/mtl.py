"""Wavefront MTL details shared by the readers and the downloaders: the file name of a ``map_*`` line."""

from __future__ import annotations

# MTL texture options and how many arguments each takes (-o, -s, -t take 1 to 3 numbers)
OPTION_ARGUMENTS = {"-blendu": 1, "-blendv": 1, "-bm": 1, "-boost": 1, "-cc": 1, "-clamp": 1, "-imfchan": 1,
                    "-mm": 2, "-texres": 1, "-type": 1, "-o": 3, "-s": 3, "-t": 3}


def texture_name(arguments: list[str]) -> str:
    """The file name of an MTL ``map_*`` line's arguments: options skipped, the rest (spaces kept)."""
    index, last = 0, len(arguments) - 1  # the file name needs at least the last token
    while index < last and arguments[index].lower() in OPTION_ARGUMENTS:
        wanted = OPTION_ARGUMENTS[arguments[index].lower()]
        index += 1
        numeric_only = wanted == 3  # -o / -s / -t take 1 to 3 numbers
        for _ in range(wanted):
            if index >= last or (numeric_only and not _is_number(arguments[index])):
                break
            index += 1
    return " ".join(arguments[index:])


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True
