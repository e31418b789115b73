"""Exceptions raised by lort. Catch :class:`LortError` for all of them.

The Rust core raises these same classes (``lort._core`` imports them from here).
"""

from collections.abc import Callable


class LortError(Exception):
    """Base class of every error lort raises on bad input or a failed read."""


class InputError(LortError, ValueError):
    """An argument is malformed: shape, dtype, option or incompatible accumulators."""


class LabelError(InputError):
    """A label is outside ``[0, K)``, or labels and logits differ in length."""


class NonFiniteError(InputError):
    """The logits hold NaN or Inf (with ``nan_policy="raise"``); the message names the row."""


class NpyFormatError(InputError):
    """A ``.npy`` file is not one lort reads: dtype, byte order, memory order or shape."""


class TruncatedFileError(NpyFormatError):
    """A ``.npy`` file holds fewer bytes than its header promises."""


class FileReadError(LortError, OSError):
    """A file could not be opened or read."""


class FileWriteError(LortError, OSError):
    """A file could not be written (a full disk, a read-only folder); the message names it."""


class DamagedFileError(InputError):
    """A file of a run folder is missing or differs from what lort recorded writing; the
    message names it and says what to do."""

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name


class OptionError(InputError):
    """An option's value is wrong. The message holds ``{key}`` where an option is named (``key``
    one of ``options``): ``str()`` spells it as Python does (the parameter), :meth:`spelled` as
    the caller says (the command line's flag, :func:`lort.options.flag_of`)."""

    def __init__(self, message: str, *options: str) -> None:
        self.template = message
        self.options = options
        super().__init__(self.spelled(lambda key: key))

    def spelled(self, name: Callable[[str], str]) -> str:
        out = self.template
        for key in self.options:
            out = out.replace("{" + key + "}", name(key))
        return out
