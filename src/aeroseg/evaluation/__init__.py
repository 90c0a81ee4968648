"""Evaluation under the paper's protocol: `aeroseg evaluate` (``command``) and `aeroseg report` (``report``).

Library use (e.g. at the end of training)::

    from aeroseg.evaluation import score_model
    cm = score_model(model, dataset, mode="whole", device="cuda")
    scores = cm.compute(dataset.info.classes, dataset.info.unseen)   # aeroseg.metrics.SegmentationScores
"""

from aeroseg.evaluation.scoring import score_model, score_predictions

__all__ = ["score_model", "score_predictions"]
