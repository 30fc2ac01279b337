"""ROUGE-L (F-measure, rouge-score's implementation) and exact match, overall and per task.

Exact match compares after stripping and collapsing whitespace, case-sensitively: "Paris." != "paris" (a
format-conversion task that gets the case wrong is wrong). ROUGE-L uses rouge-score's default tokenizer
(lower-cased alphanumeric runs), without stemming, so it forgives case and punctuation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from rouge_score import rouge_scorer

_SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def normalize(text: str) -> str:
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 of one prediction against one reference (0 when either has no tokens)."""
    return _SCORER.score(reference, prediction)["rougeL"].fmeasure


def score(predictions: Sequence[str], references: Sequence[str],
          tasks: Sequence[str] | None = None) -> dict:
    """{"rougeL", "exact_match", "n", "per_task": {task: {"rougeL", "exact_match", "n"}}, "macro_rougeL", ...}.

    Overall figures are means over examples; ``macro_*`` are means over tasks (equal weight per task).
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    tasks = list(tasks) if tasks is not None else ["all"] * len(references)
    rl = [rouge_l(p, r) for p, r in zip(predictions, references, strict=True)]
    em = [exact_match(p, r) for p, r in zip(predictions, references, strict=True)]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(tasks):
        groups[t].append(i)
    per_task = {t: {"rougeL": sum(rl[i] for i in ix) / len(ix), "exact_match": sum(em[i] for i in ix) / len(ix),
                    "n": len(ix)} for t, ix in sorted(groups.items())}
    n = len(rl)
    return {
        "rougeL": sum(rl) / n if n else 0.0,
        "exact_match": sum(em) / n if n else 0.0,
        "macro_rougeL": sum(v["rougeL"] for v in per_task.values()) / max(len(per_task), 1),
        "macro_exact_match": sum(v["exact_match"] for v in per_task.values()) / max(len(per_task), 1),
        "n": n,
        "per_task": per_task,
    }
