"""One session of the workbench: its model, its edit session and its report, and cutting a report back."""
from __future__ import annotations

from otelab.engine.session import EditSession
from otelab.eval.report import Report

__all__ = ["Track", "report_upto"]


class Track:
    """One session of the workbench: its model, its :class:`EditSession` and its :class:`Report`."""

    def __init__(self, loaded, method: str, mode: str, label: str, cov: dict, undo_depth: int):
        self.loaded, self.label = loaded, label
        self.session = EditSession(loaded, method, mode, cov=cov, undo_depth=undo_depth, progress=False)
        self.report = Report(label, meta={"method": method, "mode": mode})
        self.step_seconds: list[float] = []   # edit time of each step (not in the report: it is volatile)

    @property
    def method(self) -> str:
        return self.session.method

    @property
    def mode(self) -> str:
        return self.session.mode

    def drop_last(self, step: int) -> None:
        """Take ``step`` (the session's last) back: its weights, its edit time and its report rows."""
        self.session.undo()
        if self.step_seconds:
            self.step_seconds.pop()
        self.report = report_upto(self.report, step - 1)

    def clear(self) -> None:
        """Back to the unedited model, keeping only the report's step 0 (the unedited row)."""
        self.session.reset()
        self.step_seconds.clear()
        self.report = report_upto(self.report, 0)


def report_upto(rep: Report, step: int) -> Report:
    """A copy of ``rep`` without the rows after ``step`` (Report has no row deletion)."""
    out = Report(rep.label, rep.meta)
    df = rep.to_frame()
    for s, grp in df[df["step"] <= step].groupby("step", sort=True):
        out.add(int(s), dict(zip(grp["metric"], grp["value"])))
    return out
