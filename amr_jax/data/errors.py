"""Errors raised on bad input; every message names the file, line, qid or field."""

from amr_jax.errors import AmrError


class DataError(AmrError, ValueError):
    """Base class for invalid annotation or feature input."""


class AnnotationError(DataError):
    """Malformed or inconsistent annotation jsonl."""

    hint = "check the annotation file passed (its layout: WORKSPACE.md, 'Data layout')"


class FeatureError(DataError):
    """Invalid or missing feature file."""

    hint = ("check the feature folder flags (--audio_feats, --text_feats) and the file's layout "
            "(WORKSPACE.md, 'Data layout')")


class ModelFileError(DataError):
    """Missing or incomplete model files (converted weights, tokenizer); says what to pass."""

    hint = "see WORKSPACE.md, 'Frame timing and raw-text routes'"
