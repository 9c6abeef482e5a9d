"""Errors in what a user gave the data tools: one line that says what is wrong and what to do.

Each is an :class:`lerobot_aim.cli.InputError` (deliberately not a ValueError, whose message draccus
replaces while it builds a config): the configs (:mod:`lerobot_aim.data.configs`) raise them from
``__post_init__`` and the tools while they read their inputs, and the console entry points run inside
:func:`lerobot_aim.cli.run_command`, which prints them as ``<command>: error: ...`` and exits with
status 2.
"""

from lerobot_aim.cli import InputError


class CollectError(InputError):
    """A problem with ``lerobot-aim-collect``'s inputs, with what to do about it."""


class AnnotationError(InputError):
    """A problem with ``lerobot-aim-annotate``'s inputs, with what to do about it."""


class ConvertError(InputError):
    """A problem with the RoboTwin converter's inputs (``python -m lerobot_aim.data.robotwin``)."""
