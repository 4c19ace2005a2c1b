"""PLACEHOLDER — being replaced by the real SynthST grammar. Interface only."""
from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Sentence:
    en: str
    de: str
    fr: str
    es: str

    def text(self, lang: str) -> str:
        return getattr(self, lang)


def sample_splits(seed: int, sizes: dict[str, int]) -> dict[str, list[Sentence]]:
    """Disjoint (by English text) lists of sentences, one per named split, deterministic by seed."""
    rng = random.Random(seed)
    out, seen = {}, set()
    for name, n in sizes.items():
        out[name] = []
        while len(out[name]) < n:
            k = rng.randrange(10**6)
            if k in seen:
                continue
            seen.add(k)
            out[name].append(Sentence(f"the cat has {k} apples .", f"die Katze hat {k} Äpfel .",
                                      f"le chat a {k} pommes .", f"el gato tiene {k} manzanas ."))
    return out
