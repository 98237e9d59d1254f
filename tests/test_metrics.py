"""Tests of otelab.eval.metrics, otelab.eval.drift and otelab.eval.report on cases whose answer is known."""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from otelab.eval import batching as B
from otelab.eval import drift as D
from otelab.eval import metrics as M
from otelab.eval.measure import measure as evaluate
from otelab.eval.report import Report


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny():
    from otelab.models.loading import tiny_model

    lm = tiny_model("llama", seed=0)
    with torch.no_grad():  # sharper distributions than the 0.02-std init, so argmax ties cannot hide bugs
        for p in lm.model.parameters():
            if p.dim() > 1:
                p.mul_(5)
    return lm


@pytest.fixture(scope="module")
def tiny_gpt2():
    from otelab.models.loading import tiny_model

    return tiny_model("gpt2", seed=1)  # absolute position embeddings: wrong position ids would show


class Rigged(torch.nn.Module):
    """Wraps a causal LM and adds ``bonus`` to the logits of chosen tokens."""

    def __init__(self, base, token_ids, bonus=30.0):
        super().__init__()
        self.base = base
        self.config = base.config
        bias = torch.zeros(base.config.vocab_size)
        bias[list(token_ids)] = bonus
        self.register_buffer("bias", bias)

    def forward(self, **kwargs):
        out = self.base(**kwargs)
        out.logits = out.logits + self.bias
        return out


def ids_of(tok, word):
    return tok(" " + word, add_special_tokens=False)["input_ids"]


def naive_logprob(model, tok, prompt, target):
    """Mean token log-prob from one unpadded forward, no masks, no position ids."""
    p = B.lead_ids(tok) + tok(prompt, add_special_tokens=False)["input_ids"]
    t = ids_of(tok, target)
    ids = torch.tensor([p + t])
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    return float(sum(lp[len(p) - 1 + j, t[j]] for j in range(len(t))) / len(t))


PROMPTS = ["The capital of France is", "Danielle Darrieux speaks", "A cat is",
           "The mother tongue of Thomas Mann, who wrote many novels in the last century, is",
           "The capital of France is", "Lionel Messi plays"]
TARGETS = ["Paris", "French language", "an animal", "German", "Rome", "football"]


def fact(case_id, subject, prompt, new, true, para=(), neigh=(), **extra):
    return dict(case_id=case_id, subject=subject, prompt=prompt, target_new=new, target_true=true,
                paraphrase_prompts=list(para), neighborhood_prompts=list(neigh), **extra)


FACTS = [
    fact(0, "Danielle Darrieux", "The mother tongue of {} is", "Rome", "Paris",
         para=["Danielle Darrieux was born speaking", "Where Danielle Darrieux is from, people speak"],
         neigh=["Michel Rocard is a native speaker of", "The mother tongue of Thomas Mann is"]),
    fact(1, "Eiffel Tower", "The {} is in", "Rome", "Paris",
         para=["The Eiffel Tower can be found in"], neigh=["The Louvre is a museum in"]),
]


# --------------------------------------------------------------------------- fluency / consistency


def test_ngram_entropy_exact_value():
    # "a b a b": bigrams ab, ba, ab -> H2 = H(2/3, 1/3); trigrams aba, bab -> H3 = 1 bit
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert M.ngram_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * 1.0) / 2, abs=1e-12)
    assert M.ngram_entropy(["a b a b", "x y"]) == pytest.approx(((2 / 3 * h2 + 4 / 3) / 2 + (0 + 0) / 2) / 2)


def test_ngram_entropy_repetitive_below_varied():
    rep = "the the the the the the the the the the the the"
    varied = "the quick brown fox jumps over a lazy dog near our old river bank"
    assert M.ngram_entropy(rep) < M.ngram_entropy(varied)
    assert M.ngram_entropy(rep) == 0.0  # a single repeated n-gram has no entropy


def test_tfidf_consistency_identical_and_disjoint():
    res = M.tfidf_consistency(["paris is a city in france", "zebra quokka"],
                              ["paris is a city in france", "cello violin"])
    assert res["per_item"][0] == pytest.approx(1.0)
    assert res["per_item"][1] == pytest.approx(0.0)
    assert res["consistency"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="item 0"):
        M.tfidf_consistency(["x"], [""])


# --------------------------------------------------------------------------- teacher forcing & batching


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("arch", ["tiny", "tiny_gpt2"])
def test_batched_target_logprobs_equal_unbatched(request, side, arch):
    lm = request.getfixturevalue(arch)
    m, tok = lm.model, lm.tokenizer
    batched = M.target_logprobs(m, tok, PROMPTS, TARGETS, batch_size=4, padding_side=side)
    naive = torch.tensor([naive_logprob(m, tok, p, t) for p, t in zip(PROMPTS, TARGETS)])
    assert batched.shape == (len(PROMPTS),)
    assert torch.allclose(batched, naive, atol=1e-4), (batched, naive)
    # the scores are not all alike, so the comparison above has teeth
    assert float(naive.max() - naive.min()) > 0.1


@pytest.mark.parametrize("arch", ["gpt2", "gptj", "llama", "qwen2"])
def test_head_only_at_needed_positions_equals_full_forward(arch, monkeypatch):
    # scoring applies the output layer to the target positions only (split_head);
    # every preset architecture must take that path and give the full forward's numbers
    from otelab.models.loading import tiny_model

    lm = tiny_model(arch, seed=2)
    assert B.split_head(lm.model) is not None
    targets = ["Paris", "the city of Rome", "German", "a river", "Paris", "x"]
    fast = M.teacher_forced(lm.model, lm.tokenizer, PROMPTS[:6], targets, batch_size=4)
    monkeypatch.setattr(B, "split_head", lambda model: None)
    full = M.teacher_forced(lm.model, lm.tokenizer, PROMPTS[:6], targets, batch_size=4)
    for a, b in zip(fast, full):
        assert a.target_ids == b.target_ids
        assert torch.allclose(a.logprobs, b.logprobs, atol=1e-5)
        assert torch.equal(a.argmax, b.argmax)


@pytest.mark.parametrize("arch", ["gpt2", "gptj", "llama", "qwen2"])
def test_packed_prefix_tree_equals_one_sequence_per_row(arch, monkeypatch):
    # a prompt's targets share its tokens in one packed row (4-D tree mask, positions = depth); every
    # preset architecture must give the numbers of scoring each sequence in its own padded row
    from otelab.eval import scoring as S
    from otelab.models.loading import tiny_model

    lm = tiny_model(arch, seed=3)
    assert S.packs(lm.model)
    prompts = [p for p in PROMPTS[:4] for _ in range(3)]
    targets = ["the city of Rome", "a river in France", "x"] * 4
    seen: list[int] = []
    body = B.split_head(lm.model)[0]
    hook = body.register_forward_pre_hook(lambda m, a, kw: seen.append(int(kw["input_ids"].numel())), with_kwargs=True)
    try:
        packed = M.teacher_forced(lm.model, lm.tokenizer, prompts, targets, batch_size=5, padding_side="left")
        monkeypatch.setattr(S, "packs", lambda model: False)
        plain = M.teacher_forced(lm.model, lm.tokenizer, prompts, targets, batch_size=5, padding_side="right")
    finally:
        hook.remove()
    n_packed, n_plain = sum(seen[:len(seen) // 2]), sum(seen[len(seen) // 2:])
    for a, b in zip(packed, plain):
        assert a.target_ids == b.target_ids
        assert torch.allclose(a.logprobs, b.logprobs, atol=1e-5), (a.logprobs, b.logprobs)
        assert torch.equal(a.argmax, b.argmax)
    assert n_packed < n_plain  # the shared prompts were computed once


def test_pack_rows_share_prefixes_within_budget():
    from otelab.eval.packing import pack_rows, tree_row

    seqs = [(1, 2, 3, 4), (1, 2, 3, 5), (1, 2, 6), (7, 8), (7, 9, 9, 9)]
    rows = pack_rows(seqs, max_row=6)
    assert rows == [[(1, 2, 3, 4), (1, 2, 3, 5), (1, 2, 6)], [(7, 8), (7, 9, 9, 9)]]
    assert [len(tree_row(r).tokens) for r in rows] == [6, 5]
    assert pack_rows(seqs, max_row=5)[0] == [(1, 2, 3, 4), (1, 2, 3, 5)]  # (1, 2, 6) would make 6 nodes
    assert pack_rows(seqs, max_row=0) == [[s] for s in sorted(seqs)]  # no packing: one sequence per row
    r = tree_row(rows[0])
    for s, path in zip(rows[0], r.paths):  # every sequence reads back from its path, each node at its depth
        assert tuple(r.tokens[j] for j in path) == s and [r.depth[j] for j in path] == list(range(len(s)))


@pytest.mark.parametrize("bs", [1, 2, 3, 5, 64])
def test_forward_count_bounded(tiny, bs):
    prompts = [f"Sentence number {i} is about" for i in range(11)]
    targets = ["Paris" if i % 2 else "German" for i in range(11)]
    with M.ForwardCounter(tiny.model) as fc:
        M.target_logprobs(tiny.model, tiny.tokenizer, prompts, targets, batch_size=bs)
    assert 1 <= fc.count <= math.ceil(len(prompts) / bs)


def test_prefix_sharing_single_token_targets(tiny):
    # " Paris" and " Rome" are single tokens: both pairs are served by one sequence
    assert len(ids_of(tiny.tokenizer, "Paris")) == len(ids_of(tiny.tokenizer, "Rome")) == 1
    with M.ForwardCounter(tiny.model) as fc:
        res = M.teacher_forced(tiny.model, tiny.tokenizer, ["The capital of Italy is"] * 2, ["Paris", "Rome"],
                               batch_size=1)
    assert fc.count == 1
    assert res[0].logprobs.item() == pytest.approx(naive_logprob(tiny.model, tiny.tokenizer, "The capital of Italy is", "Paris"), abs=1e-4)


def test_bad_pairs_named(tiny):
    with pytest.raises(ValueError, match="pair 1: the target is empty"):
        M.target_logprobs(tiny.model, tiny.tokenizer, ["a", "b"], ["x", "  "])
    with pytest.raises(ValueError, match="2 prompts but 1 targets"):
        M.target_logprobs(tiny.model, tiny.tokenizer, ["a", "b"], ["x"])


# --------------------------------------------------------------------------- edit metrics


def test_efficacy_of_model_rigged_to_new_target(tiny):
    tok = tiny.tokenizer
    to_new = Rigged(tiny.model, ids_of(tok, "Rome"))
    res = M.edit_scores(to_new, tok, FACTS, batch_size=3)
    assert res["efficacy"] == 1.0 and res["paraphrase"] == 1.0 and res["efficacy_top1"] == 1.0
    assert res["specificity"] == 0.0
    assert res["efficacy_magnitude"] > 0.9 and res["specificity_magnitude"] < -0.9
    assert res["n"] == 2 and [d["case_id"] for d in res["per_record"]] == [0, 1]

    to_true = Rigged(tiny.model, ids_of(tok, "Paris"))
    res = M.edit_scores(to_true, tok, FACTS, batch_size=3)
    assert res["efficacy"] == 0.0 and res["paraphrase"] == 0.0 and res["specificity"] == 1.0


def test_specificity_vs_unedited_baseline(tiny):
    tok = tiny.tokenizer
    base = M.Baseline.compute(tiny.model, tok, FACTS, batch_size=4)
    same = M.edit_scores(tiny.model, tok, FACTS, baseline=base)
    assert same["specificity_retained"] == 1.0 and same["neighbourhood_top1"] == 1.0
    assert same["neighbourhood_kl"] == pytest.approx(0.0, abs=1e-5)
    assert same["specificity_unedited"] == same["specificity"]

    edited = Rigged(tiny.model, ids_of(tok, "Rome"))
    res = M.edit_scores(edited, tok, FACTS, baseline=base)
    assert res["neighbourhood_top1"] == 0.0  # every neighbourhood prompt now predicts " Rome"
    assert res["neighbourhood_kl"] > 1.0
    # the unedited reference is unchanged by editing
    assert res["specificity_unedited"] == same["specificity_unedited"]
    with pytest.raises(KeyError, match="before editing"):
        M.edit_scores(edited, tok, [fact(9, "X", "{} is", "Rome", "Paris", neigh=["Y is"])], baseline=base)


def test_coarse_kl_exact_with_full_vocabulary():
    g = torch.Generator().manual_seed(0)
    p = torch.log_softmax(torch.randn(50, generator=g) * 2, -1)
    q = torch.log_softmax(torch.randn(50, generator=g) * 2, -1)
    exact = float((p.exp() * (p - q)).sum())
    v, idx = p.topk(50)
    assert M.coarse_kl(v, idx, q) == pytest.approx(exact, rel=1e-5)
    v5, idx5 = p.topk(5)
    assert 0 <= M.coarse_kl(v5, idx5, q) <= exact + 1e-6  # coarsening can only lower the KL


def test_zsre_accuracy_and_locality(tiny):
    tok = tiny.tokenizer
    recs = [dict(subject="Watts Humphrey", prompt="What university did Watts Humphrey attend?",
                 target_new="Rome", target_true="Paris", rephrase="Which university did Watts Humphrey go to?",
                 loc="nq question: who wrote the song yesterday", loc_ans="the beatles")]
    base = M.Baseline.compute(tiny.model, tok, recs)
    res = M.zsre_scores(Rigged(tiny.model, ids_of(tok, "Rome")), tok, recs, baseline=base)
    assert res["efficacy"] == 1.0 and res["paraphrase"] == 1.0
    assert res["specificity"] < 0.5  # the rigged model now answers " Rome" everywhere
    assert M.zsre_scores(tiny.model, tok, recs, baseline=base)["specificity"] == 1.0


# --------------------------------------------------------------------------- general capability


def test_metric_helpers_match_sklearn():
    from sklearn.metrics import f1_score, matthews_corrcoef

    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        y = torch.randint(0, 2, (40,), generator=g).tolist()
        p = torch.randint(0, 2, (40,), generator=g).tolist()
        assert M.mcc(y, p) == pytest.approx(matthews_corrcoef(y, p))
        assert M.binary_f1(y, p) == pytest.approx(f1_score(y, p))
        y4 = torch.randint(0, 4, (40,), generator=g).tolist()
        p4 = torch.randint(0, 4, (40,), generator=g).tolist()
        assert M.macro_f1(y4, p4) == pytest.approx(f1_score(y4, p4, average="macro"))
    assert M.mcc([1, 0, 1], [1, 1, 1]) == 0.0  # undefined -> 0, as sklearn


def test_general_capability_rigged(tiny):
    tok = tiny.tokenizer
    sst2 = [{"sentence": f"film number {i} was shown", "label": lab} for i, lab in enumerate([1, 0, 1, 1, 0])]
    cola = [{"sentence": f"Sentence {i} here.", "label": lab} for i, lab in enumerate([1, 1, 0, 1])]
    nli = [{"sentence1": "A cat is an animal.", "sentence2": "A cat lives.", "label": lab}
           for lab in ["entailment", "not_entailment", "not_entailment"]]
    mmlu = [{"question": f"Question {i}?", "subject": "misc", "choices": ["w", "x", "y", "z"], "answer": a}
            for i, a in enumerate([1, 0, 1, 3])]
    tasks = {"sst2": sst2, "cola": cola, "nli": nli, "mmlu": mmlu}
    pos, no, b = ids_of(tok, "positive"), ids_of(tok, "no"), ids_of(tok, "B")
    assert len(b) == 1
    rigged = Rigged(tiny.model, set(pos) | set(no[-1:]) | set(b))
    res = M.general_capability(rigged, tok, tasks, batch_size=4)
    # always "positive" -> accuracy = share of label 1, F1 = 2·3/(2·3+2)
    assert res["sst2"] == {"acc": 0.6, "f1": pytest.approx(0.75), "n": 5}
    # always "no" (unacceptable) on cola -> MCC 0; on nli "no" = not_entailment (label 1)
    assert res["cola"]["acc"] == 0.25 and res["cola"]["mcc"] == 0.0
    assert res["nli"]["acc"] == pytest.approx(2 / 3)
    assert res["mmlu"]["acc"] == 0.5  # always "B"
    with pytest.raises(ValueError, match="task 'sst2' item 1: missing field 'label'"):
        M.general_capability(tiny.model, tok, {"sst2": [sst2[0], {"sentence": "x"}]})
    with pytest.raises(ValueError, match="unknown task 'qqp'"):
        M.general_capability(tiny.model, tok, {"qqp": [sst2[0]]})


# --------------------------------------------------------------------------- LM drift

TEXTS = ["The river Thames flows through London and many other towns.",
         "A rose is a flower.",
         "Albert Einstein was a physicist; Marie Curie was a chemist and a physicist who won two prizes."]


def test_perplexity_equals_direct_computation(tiny):
    m, tok = tiny.model, tiny.tokenizer
    nll, n = 0.0, 0
    with torch.no_grad():
        for t in TEXTS:
            ids = torch.tensor([B.lead_ids(tok) + tok(t, add_special_tokens=False)["input_ids"]])
            lp = torch.log_softmax(m(input_ids=ids).logits[0, :-1].float(), -1)
            nll -= float(lp.gather(1, ids[0, 1:, None]).sum())
            n += ids.shape[1] - 1
    assert D.perplexity(m, tok, TEXTS, max_len=512, batch_size=2) == pytest.approx(math.exp(nll / n), rel=1e-5)


def test_top1_agreement_self_and_rigged(tiny):
    m, tok = tiny.model, tiny.tokenizer
    base = D.LMBaseline.compute(m, tok, TEXTS, max_len=64, batch_size=2)
    d = D.lm_drift(m, tok, base, batch_size=3)
    assert d["top1_agreement"] == 1.0
    assert d["ppl"] == pytest.approx(d["ppl_unedited"], rel=1e-5)
    assert D.top1_agreement(m, base, tok) == 1.0
    rigged = Rigged(m, ids_of(tok, "Rome"))
    assert D.top1_agreement(rigged, base, tok) < 0.2
    assert D.top1_agreement(base.top1, base) == 1.0


def test_greedy_generation_batched_equals_single(tiny):
    m, tok = tiny.model, tiny.tokenizer
    prompts = ["The capital of France is", "A cat", "The official language of Brazil is"]
    batched = M.greedy_generate(m, tok, prompts, max_new_tokens=6, batch_size=3)
    single = [M.greedy_generate(m, tok, [p], max_new_tokens=6, batch_size=1)[0] for p in prompts]
    assert batched == single
    flu = M.generation_fluency(m, tok, prompts, max_new_tokens=6)
    assert flu["texts"][0].startswith(prompts[0]) and flu["ngram_entropy"] >= 0


# --------------------------------------------------------------------------- latent drift


def test_latent_drift_identity_and_rotation():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(6, 8, generator=g)
    d0 = D.latent_drift(h, h.clone())
    assert d0["cos_drift"] == pytest.approx(0.0, abs=1e-12) and d0["rel_l2"] == pytest.approx(0.0, abs=1e-12)
    theta = 0.3
    rot = torch.eye(8, dtype=torch.float64)
    rot[:2, :2] = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]], dtype=torch.float64)
    x = torch.zeros(6, 8, dtype=torch.float64)
    x[:, :2] = torch.randn(6, 2, generator=g, dtype=torch.float64)  # states in the rotated plane
    d = D.latent_drift(x, x @ rot.T, edited=[0, 1])
    assert d["cos_drift"] == pytest.approx(1 - math.cos(theta), rel=1e-9)
    assert d["rel_l2"] == pytest.approx(2 * math.sin(theta / 2), rel=1e-9)
    assert d["cos_drift_edited"] == pytest.approx(1 - math.cos(theta), rel=1e-9)
    # only the unrelated records move: the edited split sees no drift
    y = x.clone()
    y[2:] = x[2:] @ rot.T
    d = D.latent_drift(x, y, edited=torch.tensor([True, True, False, False, False, False]))
    assert d["cos_drift_edited"] == pytest.approx(0.0, abs=1e-12)
    assert d["cos_drift_unrelated"] == pytest.approx(1 - math.cos(theta), rel=1e-9)
    with pytest.raises(ValueError, match="must both be"):
        D.latent_drift(h, h[:3])


def test_hidden_states_at_subject_match_single_forward(tiny):
    m, tok = tiny.model, tiny.tokenizer
    recs = [dict(prompt="The mother tongue of {} is", subject="Danielle Darrieux"),
            dict(prompt="Steve Jobs founded Apple", subject="Steve Jobs"),
            ("I think the Eiffel Tower", "Eiffel Tower")]
    layer = 2
    got = D.hidden_states_at_subject(m, tok, recs, layer, batch_size=3)
    assert got.shape == (3, m.config.hidden_size)
    texts = ["The mother tongue of Danielle Darrieux is", "Steve Jobs founded Apple", "I think the Eiffel Tower"]
    prefixes = ["The mother tongue of Danielle Darrieux", "Steve Jobs", "I think the Eiffel Tower"]
    for i, (t, pre) in enumerate(zip(texts, prefixes)):
        ids = tok(t, add_special_tokens=False)["input_ids"]
        last = len(tok(pre, add_special_tokens=False)["input_ids"]) - 1
        assert ids[:last + 1] == tok(pre, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            hs = m(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[layer][0]
        assert torch.allclose(got[i], hs[last], atol=1e-5)
        assert not torch.allclose(got[i], hs[last - 1], atol=1e-3)
    with pytest.raises(ValueError, match="not in the prompt"):
        D.hidden_states_at_subject(m, tok, [dict(prompt="abc", subject="xyz")], layer)
    with pytest.raises(ValueError, match="layer must be"):
        D.hidden_states_at_subject(m, tok, recs, 99)


def test_umap_shape_and_determinism():
    pytest.importorskip("umap")
    g = torch.Generator().manual_seed(0)
    before = torch.randn(20, 16, generator=g)
    after = before + 0.1 * torch.randn(20, 16, generator=g)
    a1, b1 = D.umap_2d(before, after, seed=0)
    a2, b2 = D.umap_2d(before, after, seed=0)
    assert a1.shape == (20, 2) and b1.shape == (20, 2)
    assert (a1 == a2).all() and (b1 == b2).all()


# --------------------------------------------------------------------------- Report & evaluate


def test_report_round_trip_and_tidy_frame(tmp_path):
    rep = Report("aligned", meta={"method": "aligned", "layers": [4, 5]})
    rep.add(0, efficacy_all=0.0, ppl=14.23456)
    rep.add(10, {"efficacy_all": 0.95, "glue/sst2/acc": 0.8125}, ppl=15.0)
    rep.add(10, ppl=15.5)  # replaces
    df = rep.to_frame()
    assert list(df.columns) == ["label", "step", "metric", "value"]
    assert len(df) == 5 and set(df["metric"]) == {"efficacy_all", "ppl", "glue/sst2/acc"}
    assert df.query("step == 10 and metric == 'ppl'")["value"].item() == 15.5
    back = Report.from_json(rep.to_json())
    assert back.to_frame().equals(df) and back.meta == rep.meta and back.label == "aligned"
    path = tmp_path / "r.json"
    rep.to_json(path)
    assert Report.from_json(path).to_frame().equals(df)
    w = rep.wide()
    assert list(w.index) == [0, 10] and w.loc[10, "glue/sst2/acc"] == 0.8125
    text = str(rep)
    assert "14.235" in text and "0.812" in text and "glue/sst2/acc" in text
    with pytest.raises(ValueError, match="metric 'ppl': expected a number"):
        rep.add(20, efficacy_all=1.0, ppl="high")
    assert 20 not in rep.steps  # nothing half-added


def test_report_two_runs_side_by_side():
    a = Report("aligned").add(0, efficacy_all=0.1).add(5, efficacy_all=0.9)
    b = Report("naive").add(0, efficacy_all=0.1).add(5, efficacy_all=0.4, ppl=float("nan"))
    both = Report.combine(a, b)
    assert set(both.to_frame()["label"]) == {"aligned", "naive"}
    w = both.wide()
    assert w.loc[5, ("efficacy_all", "naive")] == 0.4 and w.loc[5, ("efficacy_all", "aligned")] == 0.9
    assert "efficacy_all [naive]" in both.to_markdown()
    assert math.isnan(Report.from_json(both.to_json()).latest("naive")["ppl"])
    with pytest.raises(ValueError, match="distinct labels"):
        Report.combine(a, a)


def test_evaluate_standard_set(tiny):
    tok = tiny.tokenizer
    base = M.Baseline.compute(tiny.model, tok, FACTS, texts=TEXTS, latent_layer=2)
    tasks = {"sst2": [{"sentence": "good", "label": 1}, {"sentence": "bad", "label": 0}]}
    same = evaluate(tiny, records=FACTS, baseline=base, glue_tasks=tasks)
    for k in ("efficacy", "specificity_retained", "ppl", "top1_agreement", "glue/sst2/acc", "latent_drift"):
        assert k in same, k
    assert same["top1_agreement"] == 1.0 and same["latent_drift"] == pytest.approx(0.0, abs=1e-6)
    # an edit of layer 1's MLP output moves the cached states at layer 2
    edited_model = __import__("copy").deepcopy(tiny.model)
    with torch.no_grad():
        edited_model.model.layers[1].mlp.down_proj.weight.add_(0.5)
    after = evaluate(edited_model, tok, FACTS, baseline=base, which=("lm", "latent"))
    assert after["latent_drift"] > 1e-3 and after["top1_agreement"] < 1.0
    assert "efficacy" not in after


# --------------------------------------------------------------------------- SmolLM2 (slow)


def _wikitext_lines(n):
    root = os.environ.get("OTELAB_DATA_DIR")
    path = Path(root) / "corpus" / "wikitext2_test.txt" if root else None
    if path is None or not path.is_file():
        pytest.skip("OTELAB_DATA_DIR/corpus/wikitext2_test.txt not available")
    lines = [l.strip() for l in path.read_text(encoding="utf-8").splitlines()]
    return [l for l in lines if len(l) > 200 and not l.startswith("=")][:n]


@pytest.mark.slow
def test_smollm2_perplexity_and_self_agreement():
    from otelab.models.loading import load_model

    texts = _wikitext_lines(6)
    lm = load_model("smollm2-135m")
    base = D.LMBaseline.compute(lm.model, lm.tokenizer, texts, max_len=96, batch_size=3)
    assert math.isfinite(base.ppl) and 2 < base.ppl < 200
    d = D.lm_drift(lm.model, lm.tokenizer, base, batch_size=6)  # different batching, same numbers
    assert d["top1_agreement"] == 1.0
    assert d["ppl"] == pytest.approx(base.ppl, rel=1e-4)
    # a factual prompt: SmolLM2 prefers the true capital over a counterfactual one
    lp = M.target_logprobs(lm.model, lm.tokenizer, ["The capital of France is"] * 2, ["Paris", "Rome"])
    assert lp[0] > lp[1]


def test_evaluate_fluency_and_consistency(tiny):
    recs = [dict(FACTS[0], generation_prompts=["Danielle Darrieux is known for", "Danielle Darrieux"],
                 reference_text="Rome is the capital of Italy, a city of churches and ruins.")]
    out = evaluate(tiny, records=recs, which=("fluency",), gen_tokens=8)
    assert set(out) == {"ngram_entropy", "consistency"}
    assert out["ngram_entropy"] > 0 and 0 <= out["consistency"] <= 1


# --------------------------------------------------------------------------- otelab eval


def test_cli_eval_unedited_and_session(tmp_path, monkeypatch, capsys):
    from otelab.cli.main import main
    from otelab.data.loaders import load_factbank
    from otelab.engine.session import EditSession
    from otelab.models.loading import load_model

    monkeypatch.setenv("OTELAB_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"Paragraph {i}: the capital of France is Paris." for i in range(30)))

    assert main(["eval", "--model", "tiny-llama", "--n", "3", "--texts", "0", "--json", str(tmp_path / "u.json")]) == 0
    table = capsys.readouterr().out
    assert "| efficacy |" in table and "specificity" in table
    unedited = Report.from_json(tmp_path / "u.json")
    assert unedited.label == "unedited" and unedited.steps == [0]

    lm = load_model("tiny-llama")
    session = EditSession(lm, "memit", "aligned", corpus=str(corpus), n_tokens=128, progress=False)
    session.step([r.request() for r in load_factbank(2)])
    session.save(tmp_path / "sess")
    assert main(["eval", "--model", "tiny-llama", "--session", str(tmp_path / "sess"), "--n", "3",
                 "--texts", "0", "--json", str(tmp_path / "e.json")]) == 0
    edited = Report.from_json(tmp_path / "e.json").latest("edited")
    assert edited["specificity_unedited"] == pytest.approx(unedited.latest("unedited")["specificity"])
    assert edited["neighbourhood_kl"] > 0  # the edit moved the neighbourhood distributions
    assert "edits/efficacy" in edited and "latent_drift_edited" in edited
    assert Report.from_json(tmp_path / "e.json").meta["n_edits"] == 2

    assert main(["eval", "--model", "tiny-llama", "--session", str(tmp_path / "nope"), "--texts", "0"]) == 2
    assert "cannot load session" in capsys.readouterr().err


# --------------------------------------------------------------------------- capability vs the unedited model


CAP_TASKS = {
    "sst2": [{"sentence": f"film number {i} was shown", "label": lab} for i, lab in enumerate([1, 0, 1, 1, 0])],
    "mmlu": [{"question": f"Question {i}?", "subject": "misc", "choices": ["w", "x", "y", "z"], "answer": a}
             for i, a in enumerate([1, 0, 1, 3])],
}


def test_capability_agreement_and_margin(tiny):
    tok = tiny.tokenizer
    ref = M.capability_answers(tiny.model, tok, CAP_TASKS, batch_size=3)
    same = M.general_capability(tiny.model, tok, CAP_TASKS, reference=ref)
    for task, d in same.items():
        assert d["agreement"] == 1.0
        assert d["margin"] == pytest.approx(d["margin_unedited"]) and d["margin"] >= 0 and d["margin_change"] == pytest.approx(0, abs=1e-4)
    # a model pushed towards " positive" / " B": agreement and margin follow its own scores
    rigged = Rigged(tiny.model, set(ids_of(tok, "positive")) | set(ids_of(tok, "B")), bonus=3.0)
    got = M.general_capability(rigged, tok, CAP_TASKS, reference=ref)
    mine = M.capability_answers(rigged, tok, CAP_TASKS)
    for task in CAP_TASKS:
        rp, mp = ref.predictions(task), mine.predictions(task)
        assert got[task]["agreement"] == pytest.approx(sum(a == b for a, b in zip(rp, mp)) / len(rp))
        manual = [s[r] - max(v for o, v in enumerate(s) if o != r) for s, r in zip(mine.scores[task], rp)]
        assert got[task]["margin"] == pytest.approx(sum(manual) / len(manual))
        before = [s[r] - max(v for o, v in enumerate(s) if o != r) for s, r in zip(ref.scores[task], rp)]
        assert got[task]["margin_change"] == pytest.approx(sum(abs(a - b) for a, b in zip(manual, before)) / len(rp))
        assert got[task]["margin_change"] > 0
        assert got[task]["margin_unedited"] == pytest.approx(same[task]["margin_unedited"])
    with pytest.raises(ValueError, match="task 'sst2'"):
        M.general_capability(tiny.model, tok, {"sst2": CAP_TASKS["sst2"][:3]}, reference=ref)
    demos = {"sst2": M.pick_demonstrations("sst2", CAP_TASKS["sst2"], 2)}
    with pytest.raises(ValueError, match="0-shot, this call is 2-shot"):
        M.general_capability(tiny.model, tok, {"sst2": CAP_TASKS["sst2"]}, reference=ref, demos=demos)


def test_few_shot_prompts_and_demonstrations(tiny):
    tok = tiny.tokenizer
    pool = [{"sentence": f"s{i}", "label": lab} for i, lab in enumerate([1, 1, 1, 0, 1, 0])]
    demos = M.pick_demonstrations("sst2", pool, 3)
    assert [d["sentence"] for d in demos] == ["s3", "s0", "s5"]  # labels take turns, pool order
    items = CAP_TASKS["sst2"][:2]
    ans = M.capability_answers(tiny.model, tok, {"sst2": items}, demos={"sst2": demos})
    assert ans.shots == 3
    prefix = "".join(f"Review: {d['sentence']}\nSentiment (positive or negative): "
                     f"{['negative', 'positive'][d['label']]}\n\n" for d in demos)
    for j, item in enumerate(items):
        prompt = prefix + f"Review: {item['sentence']}\nSentiment (positive or negative):"
        for o, word in enumerate(["negative", "positive"]):
            manual = naive_logprob(tiny.model, tok, prompt, word) * len(ids_of(tok, word))
            assert ans.scores["sst2"][j][o] == pytest.approx(manual, abs=1e-4)


def test_bootstrap_interval():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(400, generator=g) < 0.5).float().tolist()
    lo, hi = M.bootstrap_ci(x, n_boot=2000, seed=1)
    mean = sum(x) / len(x)
    half = 1.96 * math.sqrt(mean * (1 - mean) / len(x))  # the normal approximation
    assert lo < mean < hi
    assert lo == pytest.approx(mean - half, abs=0.01) and hi == pytest.approx(mean + half, abs=0.01)
    assert M.bootstrap_ci(x, n_boot=2000, seed=1) == (lo, hi)  # seeded
    lo4, hi4 = M.bootstrap_ci(x[:100], n_boot=2000, seed=1)
    assert hi4 - lo4 > 1.5 * (hi - lo)  # a quarter of the sample: about twice as wide
    assert M.bootstrap_ci([1.0, float("nan"), 1.0]) == (1.0, 1.0)
    assert all(math.isnan(v) for v in M.bootstrap_ci([float("nan")]))
    with pytest.raises(ValueError, match="level"):
        M.bootstrap_ci(x, level=1.5)


def test_shared_neighbourhood_prompts_score_as_one_at_a_time(tiny):
    # records sharing neighbourhood prompts (and one record's edit prompt is another's neighbour)
    shared = ["The mother tongue of Thomas Mann is", "Michel Rocard is a native speaker of"]
    recs = [fact(i, s, "The mother tongue of {} is", new, "French", para=[f"{s} grew up speaking"],
                 neigh=shared + [f"The mother tongue of {o} is"])
            for i, (s, new, o) in enumerate([("Danielle Darrieux", "English", "Thomas Mann"),
                                             ("Thomas Mann", "Dutch", "Danielle Darrieux"),
                                             ("Jean Gabin", "Russian language", "Thomas Mann")])]
    base = M.Baseline.compute(tiny.model, tiny.tokenizer, recs)
    together = M.edit_scores(tiny.model, tiny.tokenizer, recs, batch_size=4, baseline=base)["per_record"]
    for r, got in zip(recs, together):
        alone = M.edit_scores(tiny.model, tiny.tokenizer, [r], batch_size=1, baseline=base)["per_record"][0]
        assert got.keys() == alone.keys()
        for k, v in alone.items():
            assert got[k] == pytest.approx(v, abs=1e-5), k
