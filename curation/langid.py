"""fastText language identification (the `lid.176` model), as OBELICS filtered its documents."""

from __future__ import annotations

from pathlib import Path


class LanguageIdentifier:
    def __init__(self, model_path: Path, language: str = "en"):
        import fasttext

        if not Path(model_path).is_file():
            raise FileNotFoundError(f"language-id model not found: {model_path} (pass --lid-model PATH to lid.176.bin/.ftz)")
        self.model = fasttext.load_model(str(model_path))
        self.label = f"__label__{language}"

    def probability(self, text: str) -> float:
        """Probability that `text` is in the target language (fastText reads one line, so newlines become spaces)."""
        labels, probs = self.model.predict(" ".join(text.split()), k=-1, threshold=0.0)
        return float(dict(zip(labels, probs)).get(self.label, 0.0))
