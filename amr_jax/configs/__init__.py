"""Configs of the systems (ml_collections), the one home of their defaults.

The library (Predictor, demo, trainer) reads them here; the files under
`experiments/configs/` that the binaries' `--config` flags load re-export them.
"""
