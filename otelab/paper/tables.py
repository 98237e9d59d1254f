"""The paper's tables as data: Tables 1-11 as printed, reading a printed cell, where a run's number sits.

:data:`TABLES` holds the numbers of the paper's Tables 1-11 as printed (cells are the
printed strings: ``"99.85 ± 0.08"``, ``"99.85 / 99.80"`` for SE / OTE); :func:`number`
reads one; a :class:`PaperFigure` names the printed row and columns a run corresponds to.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

# The paper's tables as printed: {name: {title, columns, rows}}; each row a tuple of printed cells.
TABLES = {
    'Table 1': {
        'title': 'Table 1 — GLUE of LLaMA-3 after memorize-the-latest editing (Eq. 4 full vs Eq. 3 null-space)',
        'columns': ('setting', 'SST', 'MMLU', 'MRPC', 'CoLA', 'RTE', 'NLI'),
        'rows': (
            ('pre-edit', '0.831', '0.562', '0.658', '0.761', '0.284', '0.666'),
            ('full (Eq. 4)', '0.846', '0.548', '0.643', '0.779', '0.292', '0.668'),
            ('null-space simplified (Eq. 3)', '0.000', '0.014', '0.000', '0.000', '0.000', '0.000'),
        ),
    },
    'Tables 2 and 5': {
        'title': 'Tables 2 and 5 — ablation on CounterFact (2,000 edits): Eff. / Gen. / Spe.',
        'columns': ('ablation', 'method', 'Eff.', 'Gen.', 'Spe.'),
        'rows': (
            ('fully aligned', 'MEMIT', '99.85 ± 0.08', '95.29 ± 0.19', '79.98 ± 0.09'),
            ('fully aligned', 'AlphaEdit', '98.92 ± 0.12', '93.93 ± 0.80', '68.57 ± 0.74'),
            ('fully aligned', 'PRUNE', '99.87 ± 0.03', '94.91 ± 0.22', '79.90 ± 0.20'),
            ('fully aligned', 'RECT', '99.88 ± 0.08', '94.34 ± 0.09', '81.56 ± 0.22'),
            ('no error correction', 'PRUNE', '99.82 ± 0.10', '95.22 ± 0.60', '80.19 ± 0.18'),
            ('no error correction', 'RECT', '96.98 ± 0.75', '83.60 ± 1.22', '84.86 ± 0.16'),
            ('not OTE-aligned (naive)', 'MEMIT', '57.35 ± 0.60', '54.80 ± 1.02', '47.85 ± 0.09'),
            ('not OTE-aligned (naive)', 'AlphaEdit', '56.42 ± 1.50', '54.14 ± 1.30', '49.75 ± 0.10'),
            ('not OTE-aligned (naive)', 'PRUNE', '56.30 ± 1.25', '53.90 ± 0.75', '48.18 ± 0.21'),
            ('not OTE-aligned (naive)', 'RECT', '60.35 ± 1.12', '58.35 ± 1.25', '46.80 ± 0.20'),
        ),
    },
    'Table 3': {
        'title': 'Table 3 — CounterFact, SE vs OTE (each cell: SE / OTE)',
        'columns': ('model', 'method', 'Eff.', 'Gen.', 'Spe.', 'Flu.', 'Consis.'),
        'rows': (
            ('LLaMA-3', 'pre-edited', '7.85', '10.58', '89.48', '635.23', '24.14'),
            ('LLaMA-3', 'MEMIT (aligned)', '99.85 / 99.80', '95.29 / 88.33', '79.98 / 87.50', '626.63 / 632.76', '33.31 / 32.08'),
            ('LLaMA-3', 'AlphaEdit (aligned)', '98.92 / 95.30', '93.93 / 77.12', '68.57 / 87.37', '621.85 / 632.04', '32.31 / 29.96'),
            ('LLaMA-3', 'PRUNE (aligned)', '99.87 / 99.57', '94.91 / 86.80', '79.90 / 87.41', '628.03 / 632.28', '33.41 / 31.70'),
            ('LLaMA-3', 'RECT (aligned)', '99.88 / 83.23', '94.34 / 59.41', '81.56 / 88.69', '628.75 / 634.34', '33.22 / 27.99'),
            ('GPT-J', 'pre-edited', '16.22', '18.56', '83.11', '621.81', '29.74'),
            ('GPT-J', 'MEMIT (aligned)', '99.82 / 99.83', '96.51 / 94.34', '74.92 / 79.13', '616.39 / 620.66', '41.79 / 41.03'),
            ('GPT-J', 'AlphaEdit (aligned)', '99.73 / 99.77', '96.03 / 94.56', '75.49 / 78.79', '617.73 / 619.70', '41.95 / 41.09'),
            ('GPT-J', 'PRUNE (aligned)', '99.83 / 99.80', '96.16 / 94.17', '74.77 / 79.34', '617.04 / 621.28', '42.05 / 40.95'),
            ('GPT-J', 'RECT (aligned)', '99.78 / 98.27', '95.69 / 77.26', '76.71 / 81.31', '620.73 / 622.26', '41.92 / 37.64'),
            ('GPT-2 XL', 'pre-edited', '22.23', '24.34', '78.53', '626.64', '31.88'),
            ('GPT-2 XL', 'MEMIT (aligned)', '99.05 / 99.22', '93.46 / 92.19', '64.46 / 70.97', '571.72 / 623.37', '35.93 / 41.26'),
            ('GPT-2 XL', 'AlphaEdit (aligned)', '99.53 / 99.57', '94.10 / 92.72', '66.50 / 69.40', '597.86 / 617.77', '39.19 / 41.35'),
            ('GPT-2 XL', 'PRUNE (aligned)', '99.32 / 99.23', '93.95 / 91.96', '65.04 / 71.09', '583.82 / 623.39', '37.36 / 41.23'),
            ('GPT-2 XL', 'RECT (aligned)', '99.15 / 95.12', '93.82 / 79.13', '66.29 / 75.04', '588.71 / 626.95', '37.89 / 38.96'),
            ('Qwen2.5', 'pre-edited', '13.95', '16.75', '86.02', '625.68', '25.49'),
            ('Qwen2.5', 'MEMIT (aligned)', '99.82 / 99.88', '92.84 / 94.41', '82.64 / 83.20', '624.81 / 625.26', '31.74 / 32.91'),
            ('Qwen2.5', 'AlphaEdit (aligned)', '99.83 / 99.88', '92.21 / 94.03', '83.06 / 83.38', '625.30 / 625.12', '32.09 / 32.73'),
            ('Qwen2.5', 'PRUNE (aligned)', '99.78 / 99.82', '91.85 / 94.30', '82.25 / 83.30', '625.00 / 625.10', '31.58 / 32.70'),
            ('Qwen2.5', 'RECT (aligned)', '99.72 / 99.12', '91.30 / 86.45', '82.80 / 84.57', '625.04 / 625.57', '31.76 / 31.84'),
        ),
    },
    'Table 4': {
        'title': 'Table 4 — zsRE, SE vs OTE (each cell: SE / OTE)',
        'columns': ('model', 'method', 'Eff.', 'Gen.', 'Spe.'),
        'rows': (
            ('LLaMA-3', 'pre-edited', '36.99', '36.34', '31.89'),
            ('LLaMA-3', 'MEMIT (aligned)', '95.55 / 93.22', '91.63 / 88.63', '32.42 / 32.23'),
            ('LLaMA-3', 'AlphaEdit (aligned)', '94.53 / 87.30', '90.80 / 83.46', '32.54 / 32.53'),
            ('LLaMA-3', 'PRUNE (aligned)', '95.67 / 92.15', '91.52 / 88.32', '32.42 / 32.55'),
            ('LLaMA-3', 'RECT (aligned)', '95.71 / 78.90', '91.58 / 72.49', '32.27 / 32.34'),
            ('GPT-J', 'pre-edited', '26.32', '25.79', '27.42'),
            ('GPT-J', 'MEMIT (aligned)', '99.67 / 99.23', '96.63 / 94.81', '28.38 / 27.47'),
            ('GPT-J', 'AlphaEdit (aligned)', '99.60 / 99.27', '96.00 / 94.82', '28.58 / 27.46'),
            ('GPT-J', 'PRUNE (aligned)', '99.67 / 98.90', '95.89 / 94.04', '28.44 / 27.82'),
            ('GPT-J', 'RECT (aligned)', '99.62 / 82.53', '95.89 / 72.12', '28.17 / 27.74'),
            ('GPT-2 XL', 'pre-edited', '22.19', '31.30', '24.15'),
            ('GPT-2 XL', 'MEMIT (aligned)', '95.26 / 89.26', '88.39 / 81.45', '26.34 / 25.66'),
            ('GPT-2 XL', 'AlphaEdit (aligned)', '93.42 / 88.61', '84.83 / 80.31', '25.67 / 25.05'),
            ('GPT-2 XL', 'PRUNE (aligned)', '95.15 / 89.58', '87.98 / 81.81', '26.16 / 25.76'),
            ('GPT-2 XL', 'RECT (aligned)', '95.46 / 71.57', '87.89 / 63.50', '26.33 / 25.79'),
            ('Qwen2.5', 'pre-edited', '36.42', '35.26', '38.40'),
            ('Qwen2.5', 'MEMIT (aligned)', '99.18 / 96.79', '92.07 / 92.00', '43.05 / 40.82'),
            ('Qwen2.5', 'AlphaEdit (aligned)', '99.24 / 96.89', '91.46 / 91.35', '42.13 / 39.14'),
            ('Qwen2.5', 'PRUNE (aligned)', '99.21 / 96.44', '91.90 / 91.66', '42.48 / 41.32'),
            ('Qwen2.5', 'RECT (aligned)', '99.11 / 93.50', '91.43 / 84.50', '42.29 / 40.28'),
        ),
    },
    'Table 6': {
        'title': 'Table 6 — RECT keeping 20 % (stronger regularisation)',
        'columns': ('ablation', 'Eff.', 'Gen.', 'Spe.', 'Flu.', 'Consis.'),
        'rows': (
            ('fully aligned RECT-20%', '98.50 ± 0.1', '87.81 ± 0.86', '84.11 ± 0.25', '631.03 ± 0.69', '31.76 ± 0.23'),
            ('no error correction RECT-20%', '60.07 ± 1.00', '41.68 ± 0.66', '88.62 ± 0.04', '633.90 ± 0.33', '26.29 ± 0.16'),
        ),
    },
    'Table 7': {
        'title': 'Table 7 — drift after 2,000 sequential edits (PPL on held-out Wikipedia; top-1 agreement)',
        'columns': ('model', 'algorithm', 'PPL', 'top-1 agreement'),
        'rows': (
            ('LLaMA-3', 'RECT (aligned)', '9.52', '0.93'),
            ('LLaMA-3', 'MEMIT (aligned)', '9.70', '0.90'),
            ('LLaMA-3', 'PRUNE (aligned)', '9.93', '0.89'),
            ('LLaMA-3', 'AlphaEdit (aligned)', '10.79', '0.85'),
            ('LLaMA-3', 'RECT (naive)', '303,783', '0.00'),
            ('LLaMA-3', 'AlphaEdit (naive)', '566,288', '0.01'),
            ('LLaMA-3', 'PRUNE (naive)', '16,128,634', '0.01'),
            ('LLaMA-3', 'MEMIT (naive)', '54,062,861', '0.00'),
            ('Qwen2.5', 'RECT (aligned)', '9.28', '0.94'),
            ('Qwen2.5', 'PRUNE (aligned)', '9.34', '0.94'),
            ('Qwen2.5', 'AlphaEdit (aligned)', '9.35', '0.93'),
            ('Qwen2.5', 'MEMIT (aligned)', '9.39', '0.94'),
            ('Qwen2.5', 'AlphaEdit (naive)', '9.78', '0.92'),
            ('Qwen2.5', 'RECT (naive)', '10.00', '0.91'),
            ('Qwen2.5', 'MEMIT (naive)', '10.04', '0.90'),
            ('Qwen2.5', 'PRUNE (naive)', '111.44', '0.53'),
        ),
    },
    'Tables 8 and 9': {
        'title': 'Tables 8 and 9 — memorize-the-latest: latest knowledge (8) and forgotten knowledge (9)',
        'columns': ('model', 'latest Eff.', 'latest Gen.', 'latest Spe.', 'latest Flu.', 'latest Consis.', 'forgotten Eff.', 'forgotten Gen.', 'forgotten Spe.', 'forgotten Flu.', 'forgotten Consis.'),
        'rows': (
            ('LLaMA-3', '100.00', '94.83', '89.40', '630.51', '33.20', '8.39', '10.04', '89.34', '634.93', '23.93'),
            ('GPT-J', '100.00', '97.67', '84.90', '621.12', '42.54', '16.39', '17.93', '83.54', '622.06', '29.67'),
            ('GPT-2 XL', '99.67', '96.50', '82.00', '611.83', '41.17', '23.67', '24.38', '77.74', '625.95', '31.44'),
            ('Qwen2.5', '100.00', '93.00', '88.20', '624.09', '32.65', '14.07', '16.92', '85.85', '625.61', '25.44'),
        ),
    },
    'Table 10': {
        'title': 'Table 10 — 10,000 sequential edits, OTE-aligned',
        'columns': ('model', 'algorithm', 'Eff.', 'Gen.', 'Spe.', 'Flu.', 'Consis.'),
        'rows': (
            ('LLaMA-3', 'MEMIT (aligned)', '98.53', '91.06', '61.42', '604.44', '32.32'),
            ('LLaMA-3', 'RECT (aligned)', '98.88', '91.22', '64.76', '620.46', '32.16'),
            ('Qwen2.5', 'MEMIT (aligned)', '99.59', '85.42', '75.68', '624.07', '30.49'),
            ('Qwen2.5', 'RECT (aligned)', '99.47', '84.77', '76.57', '624.17', '30.66'),
            ('GPT-J', 'MEMIT (aligned)', '99.35', '93.73', '64.44', '612.36', '40.24'),
            ('GPT-J', 'RECT (aligned)', '99.33', '93.91', '66.93', '615.34', '41.02'),
            ('GPT-2 XL', 'MEMIT (aligned)', '91.23', '78.28', '56.34', '545.65', '26.44'),
            ('GPT-2 XL', 'RECT (aligned)', '93.71', '81.16', '58.11', '539.44', '27.25'),
        ),
    },
    'Table 11': {
        'title': 'Table 11 — general capability before and after 10,000 aligned edits',
        'columns': ('model', 'setting', 'SST', 'MMLU', 'MRPC', 'CoLA', 'RTE', 'NLI', 'avg'),
        'rows': (
            ('Qwen2.5', 'base', '0.825', '0.637', '0.729', '0.810', '0.226', '0.809', '0.673'),
            ('Qwen2.5', '10K edits', '0.721', '0.644', '0.724', '0.785', '0.219', '0.790', '0.647'),
            ('LLaMA-3', 'base', '0.831', '0.562', '0.658', '0.761', '0.284', '0.666', '0.627'),
            ('LLaMA-3', '10K edits', '0.782', '0.360', '0.690', '0.647', '0.319', '0.531', '0.555'),
        ),
    },
}


# The scale of each table's experiment, for the "paper" side of a comparison.
TABLE_SCALE = {
    "Table 1": "LLaMA-3 (8B), memorize-the-latest over a CounterFact stream",
    "Tables 2 and 5": "LLaMA-3 (8B), 2,000 CounterFact edits in 20 steps of 100",
    "Table 3": "2,000 CounterFact edits in 20 steps of 100 (SE) or one batch (OTE)",
    "Table 4": "2,000 zsRE edits in 20 steps of 100 (SE) or one batch (OTE)",
    "Table 6": "LLaMA-3 (8B), 2,000 CounterFact edits, RECT keeping 20 %",
    "Table 7": "LLaMA-3 (8B) unless the row names Qwen2.5, 2,000 sequential CounterFact edits",
    "Tables 8 and 9": "memorize-the-latest over a CounterFact stream",
    "Table 10": "10,000 sequential CounterFact edits",
    "Table 11": "10,000 sequential CounterFact edits",
}

_NUM = re.compile(r"-?[0-9][0-9,]*\.?[0-9]*")


def number(cell: str, which: str = "SE") -> float:
    """The number in a printed cell.

    Arguments:
        cell: e.g. ``"99.85 ± 0.08"`` (the mean is returned), ``"99.85 / 99.80"`` (SE / OTE),
            ``"54,062,861"``.
        which: ``"SE"`` (first) or ``"OTE"`` (second) of an SE / OTE cell.
    Returns:
        The number as a float.
    """
    if which not in ("SE", "OTE"):
        raise ValueError(f"which must be 'SE' or 'OTE', got {which!r}")
    parts = cell.split("/") if "/" in cell else [cell]
    part = parts[1] if which == "OTE" and len(parts) > 1 else parts[0]
    m = _NUM.search(part)
    if m is None:
        raise ValueError(f"no number in the printed cell {cell!r}")
    return float(m.group().replace(",", ""))


def table(name: str):
    """One of the paper's tables as a pandas DataFrame of printed strings (``ValueError`` for an unknown name)."""
    import pandas as pd

    if name not in TABLES:
        raise ValueError(f"no table {name!r}; known: {list(TABLES)}")
    t = TABLES[name]
    return pd.DataFrame(list(t["rows"]), columns=list(t["columns"]))


def lookup(name: str, match: dict, column: str, which: str = "SE") -> float:
    """The number in ``column`` of the only row of table ``name`` whose cells equal ``match``."""
    t = TABLES[name]
    cols = list(t["columns"])
    rows = [r for r in t["rows"] if all(r[cols.index(k)] == v for k, v in match.items())]
    if len(rows) != 1:
        raise ValueError(f"{name}: {len(rows)} rows match {match}, expected one")
    return number(rows[0][cols.index(column)], which)


@dataclass(frozen=True)
class PaperFigure:
    """Where a run's number sits in the paper: table, the row's cells, the columns per otelab metric.

    Attributes:
        table: a key of :data:`TABLES`.
        row: cells that pick one row, e.g. ``{"ablation": "fully aligned", "method": "MEMIT"}``.
        columns: ``{otelab metric: paper column}``; the special column ``"mean"`` averages the
            table's numeric columns (Table 1's GLUE tasks).
        scale: factor from the paper's unit to otelab's (0.01: percent to fraction).
        which: ``"SE"`` or ``"OTE"``: the half of an SE / OTE cell (Tables 3 and 4).
    """

    table: str
    row: dict
    columns: dict
    scale: float = 1.0
    which: str = "SE"

    def value(self, metric: str) -> Optional[float]:
        """The paper's figure for ``metric`` in otelab's unit, or None if the table has no such column."""
        col = self.columns.get(metric)
        if col is None:
            return None
        if col == "mean":
            t = TABLES[self.table]
            cols = [c for c in t["columns"] if c not in self.row and c not in ("setting", "avg")]
            return round(self.scale * sum(lookup(self.table, self.row, c, self.which) for c in cols) / len(cols), 6)
        return round(self.scale * lookup(self.table, self.row, col, self.which), 6)
