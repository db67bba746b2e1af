"""Membership-inference audit of a run's networks (``ddlnl privacy RUN``; docs/privacy.md).

``attacks``: the scores (loss, global threshold, LiRA online/offline, fixed variance); ``metrics``:
ROC, AUC, balanced accuracy, TPR at low FPR with bootstrap intervals; ``shadows``: the target and
shadow networks of each pipeline; ``audit``: a run folder's audit and ``privacy.json``; ``dp``: the
DP-SGD baseline (Opacus, an optional extra); ``figure``: the log-log ROC figure.
"""

from ddlnl.privacy.audit import TARGETS, audit_run

__all__ = ["TARGETS", "audit_run"]
