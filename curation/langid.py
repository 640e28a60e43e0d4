"""fastText language identification (the `lid.176` model), as OBELICS filtered its documents."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path


class LanguageIdentifier:
    def __init__(self, model_path: Path, language: str = "en"):
        import fasttext

        if not Path(model_path).is_file():
            raise FileNotFoundError(f"language-id model not found: {model_path} (pass --lid-model PATH to lid.176.bin/.ftz)")
        self.model = fasttext.load_model(str(model_path))
        self.model_path = Path(model_path)
        self.language = language
        self.label = f"__label__{language}"

    def probability(self, text: str) -> float:
        """Probability that `text` is in the target language (fastText reads one line, so newlines become spaces)."""
        labels, probs = self.model.predict(" ".join(text.split()), k=-1, threshold=0.0)
        return float(dict(zip(labels, probs, strict=True)).get(self.label, 0.0))


@lru_cache(maxsize=2)
def load_identifier(model_path: Path, language: str = "en") -> LanguageIdentifier:
    """One fastText model per worker process: Ray reuses workers across tasks, and loading lid.176.bin
    (~130 MB) for every partition's write task would cost more than identifying its documents."""
    return LanguageIdentifier(model_path, language)
