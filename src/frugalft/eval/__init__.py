"""Generation-based evaluation (ROUGE-L, exact match) and budget curves for label-efficient SFT."""

from frugalft.eval.generate import generate_answers
from frugalft.eval.metrics import exact_match, rouge_l, score

__all__ = ["exact_match", "generate_answers", "rouge_l", "score"]
