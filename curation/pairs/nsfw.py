"""NSFW scoring of pairs and the selection rules over the scores.

Which detector. The Idefics2 paper filters LAION COCO with "a NSFW classifier with a high recall" and its
footnote cites LAION-SAFETY: an EfficientNet-V2-B2 pixel classifier (260x260 input, 5 classes) released
as a Keras/TF-Hub `.h5` on Google Drive, in a repository with no license file. We use the LAION
CLIP-based NSFW detector instead (MIT): a small MLP over the OpenAI CLIP ViT-L/14 image embedding, because
- its weights are licensed and in a public repository, so the pipeline can be reproduced and shipped;
- it needs no TensorFlow runtime: the head is a few matrix products in torch, converted once to safetensors;
- the CLIP embeddings it consumes are useful on their own (the optional embeddings sidecar, for dedup);
- it is the detector behind LAION's own `punsafe` column, so `--nsfw-source column` on LAION COCO applies
  the same model without computing anything, and both sources are comparable.
It is an approximation of the paper's filter, not a reproduction. The paper's operating point (7% of
LAION COCO removed) is reproduced with `--drop-top-nsfw 0.07`, and `calibration.calibrate` finds the
threshold for a target recall on a labelled sample. Another detector plugs in through `NsfwClassifier`.

Scores are probabilities of NSFW (higher = more likely NSFW) for the released L/14 head; the H/14 head's
raw outputs are on their own scale, which quantile selection does not mind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from curation.errors import Rejection, SampleError, UserError
from curation.images import DEFAULT_MAX_PIXELS, open_image
from curation.pairs.clip_embedder import ClipConfig, ClipImageEmbedder
from curation.pairs.nsfw_head import NsfwHead, load_head
from curation.pairs.pair import PUNSAFE_SCORE, Pair
from curation.selection import Selection, select_high_scores

NSFW_SCORE = "nsfw"  # key in Pair.scores and the sample JSON
NSFW_FRACTION_REASON = "nsfw_top_fraction"
NSFW_THRESHOLD_REASON = "nsfw_threshold"


@runtime_checkable
class NsfwClassifier(Protocol):
    """Anything that scores decoded images; higher means more likely NSFW."""

    name: str

    def score(self, images: Sequence[Image.Image]) -> np.ndarray: ...


@dataclass
class ScoredPairs:
    ids: list[str]
    scores: np.ndarray  # float32, aligned with ids
    embeddings: np.ndarray | None  # float32 (N, D), aligned with ids, when asked for
    rejected: list[Rejection]  # each naming its pair


class ClipNsfwClassifier:
    """open_clip image embeddings (L2-normalised) followed by a LAION CLIP-based NSFW head."""

    def __init__(self, embedder: ClipImageEmbedder, head: NsfwHead) -> None:
        if head.spec.embedding_dim != embedder.embedding_dim:
            raise UserError(f"head takes {head.spec.embedding_dim}-d embeddings, CLIP gives {embedder.embedding_dim}")
        self.embedder = embedder
        self.head = head.to(embedder.device).eval()
        self.name = f"clip:{embedder.config.model}+head"

    @classmethod
    def load(cls, head_path: Path, clip: ClipConfig = ClipConfig()) -> ClipNsfwClassifier:
        embedder = ClipImageEmbedder(clip)
        return cls(embedder, load_head(head_path, embedder.device))

    @torch.inference_mode()
    def score_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32)).to(self.embedder.device)
        return self.head(tensor).float().cpu().numpy()

    def score(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.score_embeddings(self.embedder.embed(images))

    def score_pairs(self, pairs: Sequence[Pair], max_pixels: int, with_embeddings: bool) -> ScoredPairs:
        """The fast path: decoding happens in the embedder's thread pool, overlapped with the model."""
        embeddings, errors = self.embedder.embed_encoded([p.image or b"" for p in pairs], max_pixels)
        ok = [i for i, error in enumerate(errors) if error is None]
        rejected = [e.of(p.id) for p, e in zip(pairs, errors, strict=True) if e is not None]
        kept = embeddings[ok]
        return ScoredPairs([pairs[i].id for i in ok], self.score_embeddings(kept), kept if with_embeddings else None, rejected)


def score_pairs(
    pairs: Sequence[Pair],
    classifier: NsfwClassifier,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    with_embeddings: bool = False,
) -> ScoredPairs:
    """NSFW scores for a batch of pairs (the model stage); bad images come back as Rejections, never raised.

    `with_embeddings` needs a ClipNsfwClassifier (the CLIP embeddings are the sidecar's content).
    """
    if isinstance(classifier, ClipNsfwClassifier):
        return classifier.score_pairs(pairs, max_pixels, with_embeddings)
    if with_embeddings:
        raise TypeError(f"{classifier.name} does not produce embeddings")
    ids, images, rejected = [], [], []
    for pair in pairs:
        try:
            images.append(open_image(pair.image or b"", max_pixels))
        except SampleError as exc:
            rejected.append(exc.rejection.of(pair.id))
            continue
        ids.append(pair.id)
    scores = classifier.score(images) if images else np.empty(0)
    return ScoredPairs(ids, np.asarray(scores, dtype=np.float32), None, rejected)


def column_scores(pairs: Sequence[Pair]) -> ScoredPairs:
    """`--nsfw-source column`: the input's precomputed `punsafe`, no model; a pair without one is rejected."""
    ids, scores, rejected = [], [], []
    for pair in pairs:
        value = pair.scores.get(PUNSAFE_SCORE)
        if value is None:
            rejected.append(Rejection("missing_nsfw_score", "no punsafe value in the input", pair.id))
            continue
        ids.append(pair.id)
        scores.append(value)
    return ScoredPairs(ids, np.asarray(scores, dtype=np.float32), None, rejected)


def select_nsfw(ids: list[str], scores: np.ndarray, *, drop_top_fraction: float | None = None, threshold: float | None = None) -> Selection:
    """`--drop-top-nsfw F` (exactly round(F*N) highest scores over all ids) and/or `--nsfw-threshold T` (> T)."""
    return select_high_scores(
        ids,
        scores,
        top_fraction=drop_top_fraction,
        max_score=threshold,
        fraction_reason=NSFW_FRACTION_REASON,
        threshold_reason=NSFW_THRESHOLD_REASON,
    )
