"""Continuations of token contexts from any HF causal LM: greedy or nucleus sampling, fixed length,
with an optional citation blocker."""

from leantrain.generation.citation_blocker import CitationBlocker
from leantrain.generation.continuations import Decoding, continue_contexts

__all__ = ["CitationBlocker", "Decoding", "continue_contexts"]
