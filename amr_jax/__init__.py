"""amr_jax: audio moment retrieval in JAX/Flax (DCASE 2026 Task 6)."""


def __getattr__(name):
    # `from amr_jax import Predictor` without importing JAX-heavy modules on `import amr_jax`.
    if name in ("Predictor", "Prediction"):
        from amr_jax import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'amr_jax' has no attribute {name!r}")
