"""Text for activations: the built-in offline corpus, local files, hub datasets, and packing."""

from rama.data.corpus import builtin_corpus
from rama.data.packing import PackConfig, pack, token_batches
from rama.data.texts import CorpusError, iter_documents

__all__ = ["CorpusError", "PackConfig", "builtin_corpus", "iter_documents", "pack", "token_batches"]
