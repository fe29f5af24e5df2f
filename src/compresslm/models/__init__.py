"""The one small decoder-only transformer (M1, M2 and the selection study's base model), its
training loop, token datasets and safetensors checkpoints.

Main entry points::

    from compresslm.models import Transformer, config_for_size, TokenStream, TrainConfig, train_lm
    model = Transformer(config_for_size("small", vocab_size=256, max_seq_len=256), seed=0)
    result = train_lm(model, TokenStream(bytes_to_tokens(texts)), TrainConfig(1_000_000, 32, 256))
    save_model("out/m1", model, extra={"curve": result.curve})
"""

from compresslm.models.checkpoint import load_model, save_model, weights_sha256
from compresslm.models.data import IGNORE_INDEX, TokenStream, bytes_to_tokens, pack_documents
from compresslm.models.train import TrainConfig, TrainResult, bits_per_byte, evaluate_lm, lr_at, train_lm
from compresslm.models.transformer import (
    SIZES,
    KVCache,
    Transformer,
    TransformerConfig,
    config_for_size,
    loss,
)

__all__ = [
    "IGNORE_INDEX",
    "SIZES",
    "KVCache",
    "TokenStream",
    "TrainConfig",
    "TrainResult",
    "Transformer",
    "TransformerConfig",
    "bits_per_byte",
    "bytes_to_tokens",
    "config_for_size",
    "evaluate_lm",
    "load_model",
    "loss",
    "lr_at",
    "pack_documents",
    "save_model",
    "train_lm",
    "weights_sha256",
]
