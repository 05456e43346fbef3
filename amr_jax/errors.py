"""The project's error classes: what the binaries turn into one readable line.

Every message names the file (and line, qid, key or field) at fault. Each class
carries a `hint`, the usual remedy, which `amr_jax.cli` appends after a
semicolon: `error: <file>:<line>: <what>; <what to do>`.
"""


class AmrError(Exception):
    """Base class of every error this project raises on purpose."""

    hint = ""

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class ConfigError(AmrError, ValueError):
    """An invalid configuration value or an unknown configuration key."""

    hint = "see the config file's docstring for the valid keys and values"


class UsageError(AmrError, ValueError):
    """A flag value that does not fit the data (e.g. a qid that is not in the split)."""


class ConversionError(AmrError, ValueError):
    """A checkpoint that does not match a converter's name table (names file and weight)."""

    hint = ("pass the checkpoint the converter expects; its name table is in "
            "amr_jax/clap/convert.py (MS-CLAP) or amr_jax/detr/convert.py (QD-DETR)")


class CheckpointError(AmrError):
    """A checkpoint folder that exists but cannot be restored (corrupt, partial, other model)."""

    hint = ("move that step folder away to resume from an earlier one, or use a new --workdir; "
            "a config change that alters parameter shapes also needs a new workdir")
