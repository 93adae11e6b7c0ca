"""The one-minute reading of a comparison, shared by the HTML report and the Compare page.

In the order a stakeholder reads it: caveats (:func:`caveats`), what was measured
(:func:`provenance_items`), one plain sentence per system (:func:`summary_sentences`), a compact
table (:func:`compact_rows`); the detail (every metric, checkpoints) goes to an appendix.
Systems are named as people named them (run names, ``name @ step N``); ids are in the context.

``context`` is the dict :func:`core.provenance.build_context` saves with a comparison; every
function also works without one (a comparison saved before contexts existed).

Example::

    for s in summary_sentences(cmp, ctx):
        print(s)
    # With linear (recipe), the right passage is in the top 5 for 76.1% of questions, up from
    # 72.8%: 26 more of 790 questions (95% CI 12 to 40); significant.
"""

from __future__ import annotations

import time
from typing import Any

from .carryover import (
    MIN_DISTILLED_COVERAGE,
    adapter_on_new_documents_caveat,
    adapter_on_new_short_chunks_caveat,
    adapter_on_training_documents_caveat,
    distilled_elsewhere_caveat,
    pseudo_query_caveat,
)
from .evaluation import CHECKPOINT_MARK
from .leakage import CHUNK_SHARE_NOTE, LeakageReport
from .provenance import describe_sources

MINUS = "\u2212"


def _ctx(context: dict[str, Any] | None) -> dict[str, Any]:
    return context or {}


def _info(context: dict[str, Any] | None, name: str) -> dict[str, Any]:
    return (_ctx(context).get("systems") or {}).get(name) or {}


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _signed(x: float, fmt: str) -> str:
    return format(x, "+" + fmt).replace("-", MINUS)


def _int(x: float) -> str:
    return str(int(round(x))).replace("-", MINUS)


def is_checkpoint(cmp, name: str, context: dict[str, Any] | None = None) -> bool:
    info = _info(context, name)
    if info:
        return bool(info.get("checkpoint"))
    return CHECKPOINT_MARK in name or "/step_" in name


def main_systems(cmp, context: dict[str, Any] | None = None) -> list[str]:
    """The systems the summary talks about: every one but the baseline and the checkpoints."""
    return [n for n in cmp.results if n != cmp.baseline and not is_checkpoint(cmp, n, context)]


def checkpoint_systems(cmp, context: dict[str, Any] | None = None) -> list[str]:
    return [n for n in cmp.results if n != cmp.baseline and is_checkpoint(cmp, n, context)]


def _significance_word(cmp, name: str, metric: str) -> str:
    if cmp.significant(name, metric):
        return "significant"
    return "not significant (it could be noise)"


def _counts(cmp, name: str) -> tuple[int, int, float, float]:
    """(questions found in the top k by ``name`` minus by the baseline, total, CI low, CI high) in questions."""
    k = cmp.top_k
    metric = f"hit@{k}"
    n = cmp.n_queries
    base = cmp.results[cmp.baseline].per_query[metric]
    other = cmp.results[name].per_query[metric]
    sig = cmp.significance.get(name, {}).get(metric) or {}
    return int(round(float(other.sum() - base.sum()))), n, sig.get("ci_low", 0.0) * n, sig.get("ci_high", 0.0) * n


def base_sentence(cmp, context: dict[str, Any] | None = None) -> str:
    k = cmp.top_k
    hit = cmp.results[cmp.baseline].metrics[f"hit@{k}"]
    model = _ctx(context).get("base_model")
    who = f"the base model alone ({model})" if model else cmp.baseline
    return (
        f"With {who}, the right passage is in the top {k} for {_pct(hit)} of the {cmp.n_queries} evaluation questions."
    )


def _reports_for(context: dict[str, Any] | None, name: str) -> list[LeakageReport]:
    return [rep for entry, rep in leakage_entries(context) if rep is not None and name in (entry.get("systems") or [])]


def _who(names: list[str], context: dict[str, Any] | None) -> str:
    """'linear (recipe) and its 12 checkpoints' rather than thirteen names."""
    cks = [n for n in names if _info(context, n).get("checkpoint")]
    main = [n for n in names if n not in cks]
    if not cks:
        return ", ".join(main)
    if not main:
        runs = sorted({_info(context, n).get("run_name") or n for n in cks})
        return f"{len(cks)} checkpoint(s) of {', '.join(runs)}"
    return f"{', '.join(main)} and {len(cks)} checkpoint(s)"


def system_sentence(cmp, name: str, context: dict[str, Any] | None = None) -> str:
    """'With X, the right passage is in the top 5 for 76.1% of questions, up from 72.8%: 26 more of
    790 questions (95% CI 12 to 40); significant.'"""
    k = cmp.top_k
    hit_m, mrr_m = f"hit@{k}", f"mrr@{k}"
    a = cmp.results[name].metrics[hit_m]
    b = cmp.results[cmp.baseline].metrics[hit_m]
    more, n, lo, hi = _counts(cmp, name)
    if more > 0:
        change = f"up from {_pct(b)}: {more} more of {n} questions"
    elif more < 0:
        change = f"down from {_pct(b)}: {-more} fewer of {n} questions"
    else:
        change = f"the same as the base model: no net change over {n} questions"
    if more == 0 and b >= 1.0:  # both at the ceiling: nothing to test, nothing that "could be noise"
        text = (
            f"With {name}, as with the base model, the right passage is in the top {k} for every question: hit@{k} "
            "cannot show a gain on this set."
        )
    else:
        text = (
            f"With {name}, the right passage is in the top {k} for {_pct(a)} of questions, {change} "
            f"(95% CI {_int(lo)} to {_int(hi)}); {_significance_word(cmp, name, hit_m)}."
        )
    hit_sig, mrr_sig = cmp.significant(name, hit_m), cmp.significant(name, mrr_m)
    d_hit = cmp.significance[name][hit_m]["delta"]
    d_mrr = cmp.significance[name][mrr_m]["delta"]
    if mrr_sig and (not hit_sig or (d_hit > 0) != (d_mrr > 0)):
        ra = cmp.results[name].metrics[mrr_m]
        rb = cmp.results[cmp.baseline].metrics[mrr_m]
        way = "higher" if d_mrr > 0 else "lower"
        text += f" The right passage does rank {way} on average (MRR@{k} {rb:.3f} \u2192 {ra:.3f}, significant)."
    excluded = (_ctx(context).get("excluded") or {}).get("mode")  # the duplicates are out of these numbers
    leaked = [rep for rep in _reports_for(context, name) if rep.severity == "high"]
    if not excluded and leaked:
        rep = max(leaked, key=lambda r: len(r.duplicated))
        text += (
            f" But {len(rep.duplicated)} of these {rep.n_eval} questions repeat its training questions, so this does "
            "not show that it generalises."
        )
    if _info(context, name).get("picked_on_eval"):
        text += " Its best epoch was chosen on this same evaluation set, so this is optimistic."
    return text


def summary_sentences(cmp, context: dict[str, Any] | None = None) -> list[str]:
    return [base_sentence(cmp, context)] + [system_sentence(cmp, n, context) for n in main_systems(cmp, context)]


def significance_label(cmp, name: str) -> str:
    """'yes', 'no', 'hit@5 only', 'MRR@5 only', with '(worse)' when a significant change is a loss."""
    k = cmp.top_k
    if name == cmp.baseline:
        return "\u2014"
    hit, mrr = cmp.significant(name, f"hit@{k}"), cmp.significant(name, f"mrr@{k}")
    worse = any(cmp.significant(name, m) and cmp.significance[name][m]["delta"] < 0 for m in (f"hit@{k}", f"mrr@{k}"))
    label = "yes" if hit and mrr else f"hit@{k} only" if hit else f"MRR@{k} only" if mrr else "no"
    return label + (" (worse)" if worse and label != "no" else "")


def _delta_cell(sig: dict[str, float] | None) -> str:
    """A change and its CI in points (hundredths: of a share for hit@k, of MRR for MRR@k), as the CLI, the chart
    and the sentences give them."""
    if not sig:
        return "\u2014"
    return (
        f"{_signed(sig['delta'] * 100, '.1f')} pt ({_signed(sig['ci_low'] * 100, '.1f')} to "
        f"{_signed(sig['ci_high'] * 100, '.1f')})"
    )


def _rows(cmp, names: list[str]) -> list[dict[str, Any]]:
    k = cmp.top_k
    out = []
    for name in names:
        res = cmp.results[name].metrics
        sig = cmp.significance.get(name, {})
        out.append(
            {
                "system": name,
                f"hit@{k}": _pct(res[f"hit@{k}"]),
                f"MRR@{k}": f"{res[f'mrr@{k}']:.3f}",
                f"Δ hit@{k} (95% CI)": _delta_cell(sig.get(f"hit@{k}")),
                f"Δ MRR@{k} (95% CI)": _delta_cell(sig.get(f"mrr@{k}")),
                "significant": significance_label(cmp, name),
            }
        )
    return out


def compact_rows(cmp, context: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Baseline and the main systems: hit@k, MRR@k, Δ with CI, significant (Holm-adjusted)."""
    return _rows(cmp, [cmp.baseline] + main_systems(cmp, context))


def checkpoint_rows(cmp, context: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The checkpoints' rows; the best one on this set is marked as picked on the evaluation set."""
    names = checkpoint_systems(cmp, context)
    rows = _rows(cmp, names)
    if names:
        metric = f"mrr@{cmp.top_k}"
        best = max(names, key=lambda n: cmp.results[n].metrics[metric])
        for r in rows:
            r["note"] = (
                "best here: picked on the evaluation set, so its gain is overstated" if r["system"] == best else ""
            )
            r["id"] = _info(context, r["system"]).get("id", "")
    return rows


# ------------------------------------------------------------------------------------------------
# provenance and caveats
# ------------------------------------------------------------------------------------------------
def settings_text(settings: dict[str, Any] | None, chosen: dict[str, Any] | None = None) -> str:
    """'linear adapter · corpus_softmax loss · lr 0.0001 · 12 epochs · batch 32'. With ``chosen`` (what
    cross-validation picked: ``train``, ``epochs``, ``lr``, ``alpha``), its lr, epochs and shrinkage instead of
    the settings', which it may have gone past: '... · lr 0.0003 · 11 epochs chosen by cross-validation · shrunk
    toward the identity by alpha 0.25 · batch 32'."""
    s = settings or {}
    parts = []
    if s.get("adapter"):
        parts.append(f"{s['adapter']} adapter")
    if s.get("loss"):
        parts.append(f"{s['loss']} loss")
    lr, epochs = s.get("lr"), s.get("epochs")
    if chosen and not chosen.get("train"):
        parts.append("the untrained identity (cross-validation: training did not help)")
    else:
        if chosen:
            lr = chosen.get("lr", lr)
        if isinstance(lr, (int, float)):
            parts.append(f"lr {lr:g}")
        elif lr is not None:
            parts.append(f"lr {lr}")
        elif s:
            parts.append("default lr")
        if chosen:
            parts.append(f"{chosen.get('epochs')} epochs chosen by cross-validation")
            alpha = chosen.get("alpha")
            if isinstance(alpha, (int, float)) and alpha != 1:
                parts.append(f"shrunk toward the identity by alpha {alpha:g}")
        elif epochs is not None:
            parts.append(f"{epochs} epochs")
    if s.get("batch_size") is not None:
        parts.append(f"batch {s['batch_size']}")
    return " · ".join(parts)


def leakage_entries(context: dict[str, Any] | None) -> list[tuple[dict[str, Any], LeakageReport | None]]:
    return [
        (e, LeakageReport.from_dict(e["report"]) if e.get("report") else None)
        for e in _ctx(context).get("leakage") or []
    ]


def overlap_text(rep: LeakageReport | None, excluded: dict[str, Any] | None = None) -> str:
    """The leakage report in a line; ``excluded`` (the comparison context's record of a re-run without the
    leaked questions) adds which of the counted questions the numbers no longer include: the counts describe
    the set as it was checked, before the exclusion."""
    if rep is None:
        return "overlap not checked"
    c = rep.counts()
    near = (
        f"{c['near_duplicate']} near-identical (cosine \u2265 {rep.threshold:g})"
        if rep.threshold
        else "near-identical not checked"
    )
    shared = c["shared_chunks"]
    text = (
        f"{c['identical']} identical and {near} questions; {shared} {'chunk' if shared == 1 else 'chunks'} whose text "
        f"is mostly in trained passages (the same chunk, or text two documents share, such as boilerplate; "
        f"{c['on_shared_chunks']} of {rep.n_eval} evaluation questions ask about one)"
    )
    if excluded and excluded.get("n"):
        what = "the repeated questions" if excluded.get("mode") == "questions" else "these questions"
        text += f"; {what} are excluded here: the numbers are on the other {excluded['of'] - excluded['n']}"
    return text


def system_provenance(cmp, context: dict[str, Any] | None = None) -> list[dict[str, str]]:
    """Per adapter (main systems and checkpoints): id, training set, overlap, settings, selection."""
    reports = {}
    for entry, rep in leakage_entries(context):
        for name in entry.get("systems") or []:
            reports[name] = (entry, rep)
    out = []
    for name in [n for n in cmp.results if n != cmp.baseline]:
        info = _info(context, name)
        if not info:
            continue
        train = info.get("train_set") or {}
        entry, rep = reports.get(name, ({}, None))
        if train:
            n_train = (entry.get("train_set") or {}).get("n_queries") or train.get("n_queries")
            trained = f"{train.get('name')}" + (f" ({n_train} questions)" if n_train else "")
            if info.get("pseudo_queries"):
                trained += f" + {info['pseudo_queries']:,} offline pseudo-queries from the ingested chunks"
            if info.get("eval_chunks"):
                trained += f"; it also ranked the {info['eval_chunks']:,} chunks of the evaluation set named with it (never its questions)"
            if info.get("distilled_coverage") is not None:
                trained += (
                    f"; {info['distilled_coverage']:.0%} of this evaluation set's text was among the chunks it ranked"
                )
        else:
            trained = "not an adapter" if info.get("kind") in ("api", "base") else "unknown (no training set recorded)"
        out.append(
            {
                "system": name,
                "id": str(info.get("id", "")),
                "trained on": trained,
                "overlap with the evaluation set": (
                    (entry.get("error") or overlap_text(rep, _ctx(context).get("excluded"))) if train else ""
                ),
                "settings": settings_text(info.get("settings"), info.get("chosen")),
                "best epoch chosen on": (
                    "this evaluation set (optimistic)" if info.get("picked_on_eval") else info.get("validation") or ""
                ),
            }
        )
    return out


def provenance_items(cmp, context: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """(label, text) lines for the first screen: evaluation set, base model, date, k."""
    ctx = _ctx(context)
    ev = ctx.get("eval_set") or {}
    n = ev.get("n_queries") or cmp.n_queries
    items = []
    line = f"{ev.get('name') or cmp.dataset_name}: {n} questions"
    if (ctx.get("excluded") or {}).get("n"):
        line += f" ({cmp.n_queries} measured)"
    if ev.get("n_corpus"):
        line += f", ranked against {ev['n_corpus']} chunks"
    items.append(("Evaluation set", line))
    if ev.get("sources"):
        items.append(("Questions", describe_sources(ev)))
    if ev.get("documents") is not None:
        items.append(("Documents covered", ", ".join(ev["documents"]) or "unknown (no document information)"))
    if ctx.get("excluded"):
        ex = ctx["excluded"]
        items.append(
            ("Excluded", f"{ex['n']} leaked question(s) of {ex['of']}: results are on the other {ex['of'] - ex['n']}")
        )
    if ctx.get("base_model"):
        items.append(("Base model", ctx["base_model"]))
    if ctx.get("created_at"):
        items.append(("Date", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ctx["created_at"]))))
    items.append(
        (
            "Measure",
            f"k = {cmp.top_k}: hit@{cmp.top_k} = the right passage is among the first {cmp.top_k} "
            "results; MRR = 1 / its rank (0 beyond k)",
        )
    )
    return items


#: Fewer evaluation questions than this: each one moves hit@k by more than 3 points, and the caveats say so.
SMALL_EVAL_SET = 30


def _small_set_caveats(cmp, ctx: dict[str, Any]) -> list[dict[str, str]]:
    """An evaluation set too small, or a ranking too short, for its numbers to tell systems apart."""
    k, n = cmp.top_k, cmp.n_queries
    out: list[dict[str, str]] = []
    n_corpus = (ctx.get("eval_set") or {}).get("n_corpus")
    if n_corpus is not None and 0 < n_corpus <= k:
        out.append(
            {
                "level": "warning",
                "text": (
                    f"Each question is ranked among only {n_corpus} chunk(s), no more than the top {k}: every system "
                    f"finds the right passage in its top {k}, so hit@{k} cannot differ. Evaluate on a set whose corpus "
                    "holds the documents' other chunks too (a set built on the Questions page does)."
                ),
            }
        )
    elif cmp.results[cmp.baseline].metrics.get(f"hit@{k}", 0.0) >= 1.0:
        out.append(
            {
                "level": "warning",
                "text": (
                    f"The base model already finds the right passage in its top {k} for every question, so hit@{k} "
                    f"cannot show a gain here; MRR@{k} still can. A harder set (more chunks, real queries) tells more."
                ),
            }
        )
    if 0 < n < SMALL_EVAL_SET:
        out.append(
            {
                "level": "warning",
                "text": (
                    f"Only {n} evaluation questions: one question moves hit@{k} by {100 / n:.0f} points, so these "
                    "numbers and their intervals are rough (an interval of 0 to 0 only means no question changed). "
                    "Use a hundred questions or more before deciding."
                ),
            }
        )
    return out


def caveats(cmp, context: dict[str, Any] | None = None) -> list[dict[str, str]]:
    """What could make the numbers mislead, most serious first: ``{"level": error|warning|info, "text"}``, and
    for one with a remedy the page or the CLI can start, ``"action"`` (the pointer to the distil recipe:
    ``{"recipe": "distil", "dataset_id", "eval_dataset_id", "dataset_path", "eval_path", "embedder", "run_id"}``, with
    the two workspace ids or the two file paths set)."""
    ctx = _ctx(context)
    out: list[dict[str, str]] = []
    # the leaked questions already left out (every training set's): the numbers no longer hold them
    excluded = (ctx.get("excluded") or {}).get("mode")
    for entry, rep in leakage_entries(ctx):
        who = _who(entry.get("systems") or [], ctx)
        train = (entry.get("train_set") or {}).get("name", "its training set")
        if rep is None:
            if entry.get("error"):
                out.append(
                    {
                        "level": "info",
                        "text": f"{who}: {entry['error']}; its overlap with the evaluation set is unknown.",
                    }
                )
            continue
        dup = 0 if excluded else len(rep.duplicated)
        if dup and rep.severity == "high":
            out.append(
                {
                    "level": "error",
                    "text": (
                        f"{who}: {dup} of {rep.n_eval} evaluation questions ({rep.duplicate_share:.0%}) are identical or "
                        f"near-identical to questions in its training set \u201c{train}\u201d. These numbers do not measure "
                        "generalisation: they re-test what the adapter was trained on. Exclude the leaked questions or "
                        "evaluate on questions it never saw."
                    ),
                }
            )
        elif dup:
            out.append(
                {
                    "level": "warning",
                    "text": (
                        f"{who}: {dup} evaluation question(s) are identical or near-identical to training questions in "
                        f"\u201c{train}\u201d. Exclude them to be safe."
                    ),
                }
            )
        if rep.chunk_share >= CHUNK_SHARE_NOTE and excluded != "chunks":
            out.append(
                {
                    "level": "warning",
                    "text": (
                        f"{who}: {len(rep.on_shared_chunks)} of {rep.n_eval} evaluation questions ask about passages it "
                        f"trained on (\u201c{train}\u201d). This measures new questions about known passages, not new documents."
                    ),
                }
            )
    picked = [n for n in cmp.results if _info(ctx, n).get("picked_on_eval") and not is_checkpoint(cmp, n, ctx)]
    if picked:
        out.append(
            {
                "level": "warning",
                "text": (
                    f"{', '.join(picked)} chose its best epoch on this same evaluation set, so its number is optimistic: "
                    "evaluate on a set it never saw before training."
                ),
            }
        )
    for entry, _ in leakage_entries(ctx):  # a question-trained adapter on other documents: the other recipe
        cov = entry.get("text_coverage")
        if cov is None or cov >= MIN_DISTILLED_COVERAGE:
            continue
        from .distill import LONG_CHUNKS_SHARE  # an adapter was compared: torch is loaded anyway
        from .export import is_api_embedder  # the project's one definition

        local = [
            n
            for n in entry.get("systems") or []
            if _info(ctx, n).get("run_kind") == "adapter" and not is_api_embedder(_info(ctx, n).get("embedder"))
        ]
        long_share = (ctx.get("eval_set") or {}).get("long_chunk_share")
        if local and entry.get("training_documents"):  # new sections of its own documents: no other recipe needed
            out.append(
                {
                    "level": "info",
                    "text": adapter_on_training_documents_caveat(_who(local, ctx), cov, entry["training_documents"]),
                }
            )
        elif local and long_share is not None and long_share < LONG_CHUNKS_SHARE:
            # chunks the base model reads whole: the distil recipe gained no more than the adapter there
            out.append({"level": "info", "text": adapter_on_new_short_chunks_caveat(_who(local, ctx), cov, long_share)})
        elif local:
            caveat = {"level": "info", "text": adapter_on_new_documents_caveat(_who(local, ctx), cov)}
            train_set, eval_set = entry.get("train_set") or {}, ctx.get("eval_set") or {}
            action = {
                "recipe": "distil",
                "dataset_id": train_set.get("dataset_id"),  # both saved in the workspace: the page queues it
                "eval_dataset_id": eval_set.get("dataset_id"),
                "dataset_path": train_set.get("path"),  # both files: the CLI prints the command
                "eval_path": eval_set.get("path"),
                "embedder": _info(ctx, local[0]).get("embedder") or "default",
                "run_id": _info(ctx, local[0]).get("run_id"),  # its embedder options (prefixes) come from the run
            }
            if (action["dataset_id"] and action["eval_dataset_id"]) or (action["dataset_path"] and action["eval_path"]):
                caveat["action"] = action
            out.append(caveat)
    for name in cmp.results:
        cov = _info(ctx, name).get("distilled_coverage")
        if cov is not None and cov < MIN_DISTILLED_COVERAGE:
            out.append({"level": "warning", "text": distilled_elsewhere_caveat(name, cov)})
    for ck, final in (ctx.get("same_as_final") or {}).items():
        out.append(
            {
                "level": "info",
                "text": (
                    f"{ck} is {final} itself (the same result on every question: the run kept that state), so it is "
                    "listed once and not counted twice in the significance adjustment."
                ),
            }
        )
    cks = checkpoint_systems(cmp, ctx)
    if cks:
        m = len([n for n in cmp.results if n != cmp.baseline])
        out.append(
            {
                "level": "warning",
                "text": (
                    f"{len(cks)} checkpoint(s) were compared on this evaluation set. Choosing the best one here overstates "
                    f"its gain: confirm the choice on another set. A checkpoint's significance is Holm-adjusted for all "
                    f"{m} comparisons; the other systems' among themselves, so adding checkpoints does not change them."
                ),
            }
        )
    out += _small_set_caveats(cmp, ctx)
    sources = (ctx.get("eval_set") or {}).get("sources") or {}
    if sources.get("offline"):
        out.append({"level": "warning", "text": pseudo_query_caveat(sources["offline"], sum(sources.values()))})
    if ctx.get("excluded", {}).get("n"):
        ex = ctx["excluded"]
        what = (
            "duplicated questions"
            if ex["mode"] == "questions"
            else "duplicated questions and questions about trained passages"
        )
        out.append(
            {
                "level": "info",
                "text": f"{ex['n']} leaked question(s) ({what}) were excluded: the numbers are on the other {ex['of'] - ex['n']}.",
            }
        )
    if sources and set(sources) == {"unknown"}:
        out.append(
            {
                "level": "info",
                "text": "Where the evaluation questions come from is unknown (a dataset file made outside this workspace).",
            }
        )
    return out
