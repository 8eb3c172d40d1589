"""The project's own question–document similarity, for triage and embedding pairs when the
evaluator sent no context check (docs/retriever.md, "The project's similarity").

A `Similarity` takes questions and, for each, its passages, and returns one cosine per passage.
`WordLlamaSimilarity` embeds with WordLlama (static token embeddings, numpy only, its weights in
the wheel: nothing is downloaded). Tests and callers may pass any function of the same shape.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np

# questions, passages of each question -> one similarity in [-1, 1] per passage
Similarity = Callable[[Sequence[str], Sequence[Sequence[str]]], list[np.ndarray]]

WORDLLAMA = "wordllama"
OFF = "off"
SIMILARITIES = (WORDLLAMA, OFF)


class WordLlamaSimilarity:
    """Cosine of WordLlama embeddings (the 256-dimension model shipped in the wheel). Passages
    are cut to `max_chars` first: the head of a passage says what it is about, and embedding
    cost grows with length. One model per process, shared by the worker threads."""

    _model = None
    _load_lock = threading.Lock()

    def __init__(self, max_chars: int = 500, batch_size: int = 256):
        self.max_chars = max_chars
        self.batch_size = batch_size

    @classmethod
    def model(cls):
        with cls._load_lock:
            if cls._model is None:
                import os

                import wordllama

                cls._model = wordllama.WordLlama.load(cache_dir=os.path.dirname(wordllama.__file__), disable_download=True)
            return cls._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        return np.asarray(self.model().embed([text[: self.max_chars] for text in texts], norm=True, batch_size=self.batch_size))

    def __call__(self, questions: Sequence[str], passages: Sequence[Sequence[str]]) -> list[np.ndarray]:
        return cosines(self.embed(list(questions)), self.embed([text for texts in passages for text in texts]), passages)


def cosines(questions: np.ndarray, flat_passages: np.ndarray, passages: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """Row i's passages' dot products with question i (embeddings already normalized)."""
    result, start = [], 0
    for row, texts in enumerate(passages):
        end = start + len(texts)
        result.append(np.clip(flat_passages[start:end] @ questions[row], -1.0, 1.0).astype(np.float64) if end > start else np.zeros(0))
        start = end
    return result


def similarity_for(name: str, max_chars: int = 500) -> Similarity | None:
    """The similarity a setting names; None for `off`."""
    if name == OFF:
        return None
    if name == WORDLLAMA:
        return WordLlamaSimilarity(max_chars)
    raise ValueError(f"similarity must be one of {', '.join(SIMILARITIES)}, got {name!r}")
