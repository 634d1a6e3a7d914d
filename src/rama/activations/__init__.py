"""The activation pipeline, shared by SAE training, feature analysis and probes: harvest sites from
a model over a token source, stream shuffled batches, cache them on disk and read them back.

Every batch source takes `rank` / `world_size` and yields only its stride of the token stream
(see `rama.activations.batches`); a finished disk cache may be read by several readers at once.
"""

from rama.activations.batches import BatchSource, TensorBatches, check_rank, strided
from rama.activations.defaults import (
    SHARD_TOKENS,
    SHUFFLE_BUFFER_TOKENS,
    STATS_SAMPLE_TOKENS,
    stream_buffer_tokens,
    stream_harvest_tokens,
)
from rama.activations.disk_cache import (
    ActivationCache,
    CacheFileError,
    CacheMismatchError,
    DiskActivations,
    cache_activations,
)
from rama.activations.harvest import (
    Chunk,
    HarvestConfig,
    batches_with_activations,
    harvest,
    keep_mask,
    kept_activations,
    stop_layer,
)
from rama.activations.ring import RingActivations, RingLayout, produce
from rama.activations.shuffle import Prefetcher, ShuffleBuffer, take_rows
from rama.activations.stream import StreamingBatches

__all__ = [
    "SHARD_TOKENS",
    "SHUFFLE_BUFFER_TOKENS",
    "STATS_SAMPLE_TOKENS",
    "ActivationCache",
    "BatchSource",
    "CacheFileError",
    "CacheMismatchError",
    "Chunk",
    "DiskActivations",
    "HarvestConfig",
    "Prefetcher",
    "RingActivations",
    "RingLayout",
    "ShuffleBuffer",
    "StreamingBatches",
    "TensorBatches",
    "batches_with_activations",
    "cache_activations",
    "check_rank",
    "harvest",
    "keep_mask",
    "kept_activations",
    "produce",
    "stop_layer",
    "stream_buffer_tokens",
    "stream_harvest_tokens",
    "strided",
    "take_rows",
]
