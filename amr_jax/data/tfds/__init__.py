"""TFDS (array_record) datasets of the DCASE feature layout; no TensorFlow needed.

  builders.build(name, manual_dir=..., data_dir=...)   # castella, clotho_moment,
                                                       # dcase2026_evaluation, synthetic_*
  reader.load_tfds_split(name, split, data_dir=...)    # -> amr_jax.data.loader.Split

Importing this package imports `tensorflow_datasets`; the rest of the project imports it
only through `amr_jax.data.sources` when a `tfds:` source is asked for.
"""
