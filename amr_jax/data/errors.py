"""Errors raised on bad input; every message names the file, line, qid or field."""


class DataError(ValueError):
    """Base class for invalid annotation or feature input."""


class AnnotationError(DataError):
    """Malformed or inconsistent annotation jsonl."""


class FeatureError(DataError):
    """Invalid or missing feature file."""


class ModelFileError(DataError):
    """Missing or incomplete model files (converted weights, tokenizer); says what to pass."""
