"""Collecting metrics per editing step: :class:`Report` (the metrics come from :mod:`otelab.eval.measure`).

A ``Report`` stores long-format rows ``(label, step, metric, value)``: flat
metric names such as ``efficacy_all``, ``specificity``, ``ppl``,
``glue/sst2/acc`` or ``latent_drift``, one value per step. Two runs (e.g.
aligned vs misaligned editing) are compared by giving them labels and
combining the reports.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping


def _number(name: str, value: Any) -> float:
    """A metric value as float; None becomes NaN; anything else non-numeric is an error naming the metric."""
    if value is None:
        return float("nan")
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            raise ValueError(f"metric {name!r}: expected a single number, got an array") from None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    raise ValueError(f"metric {name!r}: expected a number, got {type(value).__name__} {value!r}")


def _fmt(v: float, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if v != 0 and (abs(v) >= 10 ** 6 or abs(v) < 10 ** -digits):
        return f"{v:.{digits}g}"
    return f"{v:.{digits}f}"


class Report:
    """Metrics per editing step, for one or several labelled runs.

    Arguments:
        label: the run's name (used when reports are combined).
        meta: free-form settings (method, model, layers, ...), JSON-serialisable.

    Example::

        rep = Report("aligned", meta={"method": "aligned"})
        rep.add(0, efficacy_all=0.0, ppl=14.2)
        rep.add(10, {"efficacy_all": 0.95, "glue/sst2/acc": 0.81})
        print(rep)
    """

    def __init__(self, label: str | None = None, meta: Mapping[str, Any] | None = None):
        self.label = label
        self.meta: dict[str, Any] = dict(meta or {})
        self._rows: dict[tuple[str | None, int, str], float] = {}

    # -- adding
    def add(self, step: int, metrics: Mapping[str, Any] | None = None, /, **more: Any) -> "Report":
        """Record metric values at ``step`` (a later value for the same step and metric replaces the earlier one).

        Arguments:
            step: the editing step (number of edits applied, or batch index).
            metrics: optional dict of ``name -> number`` (names may contain ``/``).
            **more: more ``name=number`` pairs.

        Returns:
            ``self``.
        """
        if isinstance(step, bool) or not isinstance(step, int):
            try:
                if int(step) != step:
                    raise ValueError
                step = int(step)
            except (TypeError, ValueError):
                raise ValueError(f"step must be an integer, got {step!r}") from None
        items = {**dict(metrics or {}), **more}
        values = {}
        for name, v in items.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"metric names must be non-empty strings, got {name!r}")
            values[name] = _number(name, v)
        for name, v in values.items():  # validated first: nothing half-added
            self._rows[(self.label, step, name)] = v
        return self

    def add_meta(self, **settings: Any) -> "Report":
        """Record free-form settings (must be JSON-serialisable)."""
        json.dumps(settings)
        self.meta.update(settings)
        return self

    @classmethod
    def combine(cls, *reports: "Report") -> "Report":
        """One report holding several labelled runs (for side-by-side comparison).

        Raises:
            ValueError: if two runs share a label.
        """
        out = cls()
        labels = [r.label for r in reports]
        if len(set(labels)) != len(labels):
            raise ValueError(f"runs to combine need distinct labels, got {labels}")
        for r in reports:
            out._rows.update(r._rows)
            if r.meta:
                out.meta[str(r.label)] = r.meta
        return out

    # -- reading
    @property
    def labels(self) -> list[str | None]:
        return sorted({k[0] for k in self._rows}, key=lambda x: (x is not None, str(x)))

    @property
    def steps(self) -> list[int]:
        return sorted({k[1] for k in self._rows})

    @property
    def metrics(self) -> list[str]:
        """Metric names in first-added order."""
        return list(dict.fromkeys(k[2] for k in self._rows))

    def latest(self, label: str | None = None) -> dict[str, float]:
        """The metrics at the last step of a run (default: this report's label)."""
        label = self.label if label is None else label
        rows = {k: v for k, v in self._rows.items() if k[0] == label}
        if not rows:
            return {}
        last = max(k[1] for k in rows)
        return {k[2]: v for k, v in rows.items() if k[1] == last}

    def to_frame(self):
        """Tidy ``pandas.DataFrame`` with columns ``label, step, metric, value``, sorted by label and step."""
        import pandas as pd

        df = pd.DataFrame([(lab, step, name, v) for (lab, step, name), v in self._rows.items()],
                          columns=["label", "step", "metric", "value"])
        order = {m: i for i, m in enumerate(self.metrics)}
        df["_o"] = df["metric"].map(order)
        df = df.sort_values(["label", "step", "_o"], kind="stable", na_position="first").drop(columns="_o")
        return df.reset_index(drop=True).astype({"step": int, "value": float})

    def wide(self):
        """Pivot: one row per step, one column per metric (columns ``(metric, label)`` when several runs)."""
        df = self.to_frame()
        if len(self.labels) <= 1:
            out = df.pivot_table(index="step", columns="metric", values="value", aggfunc="last", dropna=False)
            return out.reindex(columns=[m for m in self.metrics if m in out.columns])
        df = df.assign(label=df["label"].astype(str))
        out = df.pivot_table(index="step", columns=["metric", "label"], values="value", aggfunc="last",
                             dropna=False)
        cols = [(m, str(l)) for m in self.metrics for l in self.labels if (m, str(l)) in out.columns]
        return out.reindex(columns=cols)

    def to_markdown(self, digits: int = 3, layout: str = "steps") -> str:
        """A readable markdown table with rounded numbers.

        Arguments:
            digits: decimals shown.
            layout: ``"steps"`` (one row per step, one column per metric, as
                :meth:`wide`) or ``"metrics"`` (one row per metric, one column per
                step and run; easier to read for a single evaluation).
        """
        if layout not in ("steps", "metrics"):
            raise ValueError(f"layout must be 'steps' or 'metrics', got {layout!r}")
        if not self._rows:
            return "(empty report)"
        w = self.wide()
        multi = len(self.labels) > 1

        def col_name(c):
            return f"{c[0]} [{c[1]}]" if multi else str(c)

        if layout == "steps":
            heads = ["step"] + [col_name(c) for c in w.columns]
            body = [[str(step)] + [_fmt(v, digits) for v in row.tolist()] for step, row in w.iterrows()]
        else:
            t = w.T  # rows: metric (or (metric, label)), columns: steps
            heads = ["metric"] + [f"step {s}" for s in t.columns]
            body = [[col_name(idx)] + [_fmt(v, digits) for v in row.tolist()] for idx, row in t.iterrows()]
        lines = ["| " + " | ".join(heads) + " |", "|:---|" + "|".join("---:" for _ in heads[1:]) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        title = f"**{self.label}**\n\n" if self.label and not multi else ""
        return title + "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()

    def __repr__(self) -> str:
        return f"Report(label={self.label!r}, steps={len(self.steps)}, metrics={len(self.metrics)})"

    def __len__(self) -> int:
        return len(self._rows)

    # -- JSON
    def to_json(self, path: str | Path | None = None) -> str:
        """Serialise to JSON (NaN stored as null); also write it to ``path`` when given."""
        rows = [{"label": lab, "step": step, "metric": name, "value": None if math.isnan(v) else v}
                for (lab, step, name), v in self._rows.items()]
        text = json.dumps({"format": "otelab-report/1", "label": self.label, "meta": self.meta, "rows": rows},
                          indent=1, ensure_ascii=False)
        if path is not None:
            from otelab.cache import atomic_write_bytes

            atomic_write_bytes(Path(path), text.encode("utf-8"))
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "Report":
        """Rebuild a report from :meth:`to_json` output (a JSON string or a file path)."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text(encoding="utf-8")
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != "otelab-report/1":
            raise ValueError("not an otelab report (missing 'format': 'otelab-report/1')")
        rep = cls(data.get("label"), data.get("meta"))
        for j, row in enumerate(data.get("rows", [])):
            try:
                rep._rows[(row["label"], int(row["step"]), str(row["metric"]))] = _number(row["metric"], row["value"])
            except (KeyError, TypeError) as err:
                raise ValueError(f"report row {j} is malformed ({err})") from None
        return rep
