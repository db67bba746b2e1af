"""Membership-inference audit of a run's networks (``ddlnl privacy RUN``; docs/privacy.md).

``attacks``: the scores (loss, global threshold, LiRA online/offline, fixed variance); ``metrics``:
ROC, AUC, balanced accuracy, TPR at low FPR with bootstrap intervals; ``shadows``: the target and
shadow networks of each pipeline; ``audit``: a run folder's audit and ``privacy.json``; ``dp``: the
DP-SGD baseline (Opacus, an optional extra); ``figure``: the log-log ROC figure; ``options``: the
audit's options, shared by ``ddlnl privacy`` and a study's ``privacy:`` section.

``audit_run`` is imported on first use (PEP 562), so that the command line and study files can read
``options`` without loading torch.
"""

from ddlnl.privacy.options import TARGETS, AuditOptions

__all__ = ["TARGETS", "AuditOptions", "audit_run"]


def __getattr__(name: str):
    if name == "audit_run":
        from ddlnl.privacy.audit import audit_run

        return audit_run
    raise AttributeError(f"module 'ddlnl.privacy' has no attribute {name!r}")
