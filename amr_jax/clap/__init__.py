"""MS-CLAP in Flax: projection heads, GPT-2 text encoder, tokenizer, conversion, embedding."""

from amr_jax.clap.convert import (
    ClapParams,
    ConversionError,
    convert_checkpoint,
    load_converted,
    save_converted,
)
from amr_jax.clap.embed import (
    NEUTRAL_PROMPTS,
    embed_query_from_features,
    embed_query_from_text,
    neutral_embedding,
    project_audio,
)
from amr_jax.clap.gpt2 import GPT2, GPT2Config
from amr_jax.clap.heads import ClapModel, ProjectionHead, l2_normalize
from amr_jax.clap.tokenizer import ClapTokenizer, last_index

__all__ = [
    "GPT2",
    "NEUTRAL_PROMPTS",
    "ClapModel",
    "ClapParams",
    "ClapTokenizer",
    "ConversionError",
    "GPT2Config",
    "ProjectionHead",
    "convert_checkpoint",
    "embed_query_from_features",
    "embed_query_from_text",
    "l2_normalize",
    "last_index",
    "load_converted",
    "neutral_embedding",
    "project_audio",
    "save_converted",
]
