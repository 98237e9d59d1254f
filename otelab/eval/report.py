"""Collecting metrics per editing step: :class:`Report`, and :func:`evaluate`.

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
from typing import Any, Iterable, Mapping, Sequence


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


# ----------------------------------------------------------------------------


def evaluate(model_or_loaded, tok=None, records: Sequence[Any] = (), *, baseline=None,
             glue_tasks: Mapping[str, Sequence[Mapping]] | None = None, texts: Sequence[str] | None = None,
             which: Iterable[str] = ("edit", "lm", "glue", "latent"), batch_size: int = 32, lm_batch_size: int = 8,
             max_len: int = 128, gen_tokens: int = 50, show_progress: bool | None = None) -> dict[str, float]:
    """The standard metric set in one call, as flat ``name -> number`` (ready for :meth:`Report.add`).

    Parts (each runs only when asked for in ``which`` and its inputs exist):

    - ``"edit"``: :func:`otelab.eval.metrics.edit_scores` on CounterFact-style records
      or :func:`otelab.eval.metrics.zsre_scores` on zsRE records (efficacy,
      paraphrase, specificity, ...; the "vs unedited" variants need ``baseline``).
    - ``"lm"``: ``ppl``, ``ppl_unedited``, ``top1_agreement`` against
      ``baseline.lm``; or only ``ppl`` on ``texts`` when there is no LM baseline.
    - ``"glue"``: ``glue/<task>/<acc|f1|mcc>`` on ``glue_tasks``.
    - ``"latent"``: ``latent_drift`` (mean 1 - cos over the baseline's latent
      records) and its ``_unrelated`` / ``_edited`` splits (``records`` count as edited).
    - ``"fluency"``: ``ngram_entropy`` of greedy generations from the records'
      generation prompts, and ``consistency`` (TF-IDF) when they carry a ``reference_text``.

    Arguments:
        model_or_loaded: a ``LoadedModel`` (then ``tok`` may be omitted) or a model.
        tok: the tokenizer.
        records: the edited facts to score.
        baseline: an :class:`otelab.eval.metrics.Baseline` computed before editing.
        glue_tasks: ``{task: items}`` for general capability.
        texts: held-out texts for perplexity when ``baseline.lm`` is absent.
        which: the parts to compute.
        batch_size, lm_batch_size: sequences per forward pass.
        max_len: token limit for ``texts``.
        gen_tokens: tokens generated per generation prompt (``"fluency"``).

    Returns:
        dict of floats; to compare "all edits so far" with "the latest batch",
        call it twice and suffix the names (``efficacy_all``, ``efficacy_latest``).
    """
    from otelab.eval import drift as D
    from otelab.eval import metrics as M
    import torch

    # a LoadedModel carries .model and .tokenizer (a bare HF model also has a .model: its backbone)
    loaded = not isinstance(model_or_loaded, torch.nn.Module)
    model = model_or_loaded.model if loaded else model_or_loaded
    tok = tok if tok is not None else getattr(model_or_loaded, "tokenizer", None) if loaded else None
    if tok is None:
        raise ValueError("evaluate needs a tokenizer (pass tok, or a LoadedModel)")
    which = set(which)
    unknown = which - {"edit", "lm", "glue", "latent", "fluency"}
    if unknown:
        raise ValueError(f"unknown evaluation part(s) {sorted(unknown)}; choose from edit, lm, glue, latent, fluency")
    records = list(records)
    out: dict[str, float] = {}
    if "edit" in which and records:
        zs = [M.is_zsre_record(r) for r in records]
        if any(zs) and not all(zs):
            raise ValueError("records mix zsRE and CounterFact-style items; evaluate them separately")
        res = (M.zsre_scores(model, tok, records, baseline, batch_size, show_progress) if all(zs)
               else M.edit_scores(model, tok, records, batch_size, baseline, show_progress))
        out.update({k: v for k, v in res.items() if k not in ("per_record", "n")})
    if "lm" in which:
        if baseline is not None and getattr(baseline, "lm", None) is not None:
            out.update(D.lm_drift(model, tok, baseline.lm, lm_batch_size, show_progress))
        elif texts:
            out["ppl"] = D.perplexity(model, tok, texts, max_len, lm_batch_size, show_progress)
    if "glue" in which and glue_tasks:
        for task, d in M.general_capability(model, tok, glue_tasks, batch_size, show_progress).items():
            out.update({f"glue/{task}/{k}": v for k, v in d.items() if k != "n"})
    if "latent" in which and baseline is not None and getattr(baseline, "latent", None) is not None:
        d = baseline.latent.drift(model, tok, records, batch_size)
        out["latent_drift"] = d["cos_drift"]
        out["latent_drift_unrelated"] = d["cos_drift_unrelated"]
        out["latent_drift_edited"] = d["cos_drift_edited"]
        out["latent_rel_l2"] = d["rel_l2"]
    if "fluency" in which and records:
        prompts, gen_owner = [], []
        for i, r in enumerate(records):
            for p in (M._get(r, "generation_prompts", None) or []):
                prompts.append(p); gen_owner.append(i)
        if prompts:
            flu = M.generation_fluency(model, tok, prompts, gen_tokens, min(batch_size, 16), show_progress)
            out["ngram_entropy"] = flu["ngram_entropy"]
            per_rec: dict[int, list[str]] = {}
            for i, t in zip(gen_owner, flu["texts"]):
                per_rec.setdefault(i, []).append(t)
            pairs = [(per_rec[i], M._get(records[i], "reference_text", None)) for i in sorted(per_rec)]
            pairs = [(g, ref) for g, ref in pairs if isinstance(ref, str) and ref.strip()]
            if pairs:
                out["consistency"] = M.tfidf_consistency([g for g, _ in pairs], [ref for _, ref in pairs])["consistency"]
    return out
