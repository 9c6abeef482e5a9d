"""How AIM's commands start and fail: LeRobot's ``@parser.wrap()`` on a function typed with its config
(as ``lerobot/scripts/lerobot_record.py``), and input errors printed as one line the user can act on.

A command's config checks its fields in ``__post_init__`` and raises :class:`InputError` (or a subclass)
with what is wrong and what to pass instead. It is deliberately not a ValueError: draccus, which
parses the command line, replaces the message of a ValueError raised while it builds a config by
"Couldn't instantiate class ... using the given arguments".
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class InputError(Exception):
    """A command's input that cannot work, with what to do about it."""


def run_command(entry: Callable[[], object], command: str) -> None:
    """Run a ``@parser.wrap()`` entry point; an :class:`InputError` (also one that draccus wrapped while
    parsing) is printed as ``<command>: error: <message>`` and the process exits with status 2."""
    try:
        entry()
    except Exception as error:  # noqa: BLE001 - re-raised unless it is (or wraps) an InputError
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, InputError):
            cause = cause.__cause__
        if cause is None:
            raise
        print(f"{command}: error: {cause}", file=sys.stderr)
        sys.exit(2)
