"""Pure helpers that shape core data for display (no Streamlit import, unit-testable).

Everything here is formatting or a read-only summary: no training, generation, chunking or
evaluation logic lives here (that is ``core``'s job).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from core.status import ACTIVE  # noqa: F401  (pages import it from here)

# ------------------------------------------------------------------------------------------------
# the Train form's hyperparameter fields
# ------------------------------------------------------------------------------------------------
HP_GENERATION = "hp_generation"  # session state: per field, how many times a preset gave it a new value
_HP_KEY = re.compile(r"^hp_([a-z0-9_]+?)(?:__(\d+))?$")


def hp_key(name: str, state: Mapping) -> str:
    """The widget key of hyperparameter ``name``: ``hp_<name>``, then ``hp_<name>__<n>`` once a preset
    (an adapter's or a starting point's defaults) has given the field a new value ``n`` times.

    A new key per new value is what keeps a stale browser value off the field: a keystroke sent before
    the preset's rerun reached the browser carries the old value under the old key, which no widget
    reads any more (with one key, Streamlit took the stale value as the user's own edit)."""
    gen = (state.get(HP_GENERATION) or {}).get(name, 0)
    return f"hp_{name}__{gen}" if gen else f"hp_{name}"


def set_hp_fields(state: MutableMapping, values: Mapping[str, Any], previous: Mapping[str, Any] | None) -> list[str]:
    """Give the fields the preset values ``values``; returns the names of the fields set.

    With ``previous`` (the values of the choice the form held before), only fields whose preset value
    changes are set, so what the user typed into any other field stays; every field set gets a new
    widget key (:func:`hp_key`) and the old keys of that field are dropped. A field missing from
    ``state`` is always set."""
    gens = dict(state.get(HP_GENERATION) or {})
    changed = []
    for name, value in values.items():
        current = hp_key(name, {HP_GENERATION: gens})
        if current in state and previous is not None and previous.get(name) == value:
            continue
        if current in state:
            gens[name] = gens.get(name, 0) + 1
        changed.append(name)
        state[hp_key(name, {HP_GENERATION: gens})] = value
    state[HP_GENERATION] = gens
    for k in [k for k in list(state.keys()) if isinstance(k, str)]:  # old keys of the fields set
        m = _HP_KEY.match(k)
        if m and m.group(1) in changed and k != hp_key(m.group(1), {HP_GENERATION: gens}):
            del state[k]
    return changed


# ------------------------------------------------------------------------------------------------
# general formatting
# ------------------------------------------------------------------------------------------------
def ago(ts: float | None, now: float | None = None) -> str:
    """'just now', '5 min ago', '3 h ago', or a date."""
    if not ts:
        return ""
    delta = (now or time.time()) - float(ts)
    if delta < 45:
        return "just now"
    if delta < 3600:
        return f"{int(delta // 60) or 1} min ago"
    if delta < 86400:
        return f"{int(delta // 3600)} h ago"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def pages_label(start: Any, end: Any) -> str:
    if start is None:
        return ""
    return f"p. {start}" if start == end or end is None else f"pp. {start}–{end}"


def fmt_num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


_MD_TEXT_SPECIAL = re.compile(r"([\\`*_\[\]<>#|$~])")  # links, emphasis, code, HTML, tables, LaTeX


def md_text(text: str) -> str:
    """Plain text made safe to embed in Streamlit markdown (names and questions are user text)."""
    return _MD_TEXT_SPECIAL.sub(r"\\\1", str(text))


# Every ASCII punctuation character that Streamlit's Markdown (GFM, directives, emoji, math) gives
# a meaning to; CommonMark lets a backslash make any of them literal.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:@&=^%/])")


def md_escape(text: Any) -> str:
    r"""User or document text made literal for anything Streamlit renders as Markdown.

    ``st.markdown``/``st.caption``, alerts, toasts, ``st.progress`` text, metric and expander
    labels all render Markdown: a PDF whose text holds ``![x](http://host/beacon.png)`` would
    make the browser fetch that URL, and ``[x](http://...)`` or a bare URL would be a live link.
    Backslash-escaping every special character (and the ``:``/``.``/``@`` of autolinks) shows
    the text exactly as written. Use it on every file name, run or dataset name, job title,
    question, chunk text and error message put inside Markdown; long bodies can go to
    ``st.text`` instead, which never parses.

    >>> md_escape("![x](http://h/b.png) **hi**")
    '\\!\\[x\\]\\(http\\:\\/\\/h\\/b\\.png\\) \\*\\*hi\\*\\*'
    """
    s = "" if text is None else str(text)
    return _MD_SPECIAL.sub(r"\\\1", s).replace("\r", "")


def preview(text: str | None, n: int = 160) -> str:
    text = re.sub(r"\s+", " ", text or "").strip()
    return text if len(text) <= n else text[: n - 1] + "…"


# ------------------------------------------------------------------------------------------------
# workspace summary (read-only counts for the sidebar and page headers)
# ------------------------------------------------------------------------------------------------


# ------------------------------------------------------------------------------------------------
# documents
# ------------------------------------------------------------------------------------------------
STATUS_LABEL = {"ok": "ingested", "duplicate": "already in the workspace", "error": "error"}


def ingest_rows(reports: Iterable[dict]) -> list[dict]:
    """One display row per file of an ingest job's ``result["reports"]``."""
    rows = []
    for r in reports:
        rows.append(
            {
                "file": r.get("filename"),
                "status": STATUS_LABEL.get(r.get("status"), r.get("status")),
                "pages": r.get("pages") or 0,
                "characters": r.get("chars") or 0,
                "chunks": r.get("chunks") or 0,
                "truncated chunks": r.get("truncated") or 0,
                "error": r.get("error") or "",
            }
        )
    return rows


def document_rows(docs: Iterable[dict]) -> list[dict]:
    """The table of ingested documents (``DocumentOverview.documents``; the files that failed are
    listed apart, see :func:`failed_line`)."""
    return [
        {
            "file": d["filename"],
            "pages": d["pages"],
            "characters": d["chars"],
            "chunks": d["n_chunks"],
            "truncated chunks": d["n_truncated"],
            "size (MB)": round((d.get("size_bytes") or 0) / 1e6, 2),
            "added": ago(d.get("added_at")),
        }
        for d in docs
    ]


def failed_line(d: dict) -> str:
    """One Markdown line for a file that failed to ingest: its name in bold, the error in full (the
    product's errors start with the file's name and end with what to do), when it was tried."""
    name = str(d.get("filename") or "")
    err = re.sub(r"\s+", " ", str(d.get("error") or "")).strip() or "failed; no reason was recorded: add it again."
    head = f"**{md_escape(name)}**"
    body = md_escape(err[len(name) :]) if name and err.startswith(name) else f": {md_escape(err)}"
    when = ago(d.get("added_at"))
    return f"{head}{body}" + (f" · _tried {md_escape(when)}_" if when else "")


def documents_hint(picked: int, busy: bool, failed: int) -> str:
    """The next step while no document is ingested, matching what the user has done so far:
    ``picked`` files chosen in the uploader, an ingest job running, ``failed`` files that failed."""
    if busy:
        return "Ingesting: the documents appear here when the job above ends."
    if picked:
        return (
            f"{picked} file(s) picked, not ingested yet: press **Ingest {picked} file(s)** above to add them "
            "to the workspace."
        )
    if failed:
        return (
            "No document is ingested yet: the files below failed, each with the reason and what to do. "
            "Add the fixed files above, or any text PDF."
        )
    return (
        "Upload PDFs first: drop one or more files above and press **Ingest**. "
        "Try a 10-K report, a manual or any text PDF."
    )


def chunk_label(c: dict) -> str:
    return f"{c.get('filename')} · {pages_label(c.get('page_start'), c.get('page_end'))} · chunk {c.get('idx')}"


def chunk_rows(chunks: Iterable[dict]) -> list[dict]:
    return [
        {
            "file": c["filename"],
            "pages": pages_label(c["page_start"], c["page_end"]),
            "chunk": c["idx"],
            "tokens": c["n_tokens"],
            "truncated": bool(c["truncated"]),
            "text": preview(c["text"], 200),
        }
        for c in chunks
    ]


# ------------------------------------------------------------------------------------------------
# questions
# ------------------------------------------------------------------------------------------------
QUESTION_COLUMNS = ["delete", "question", "file", "pages", "chunk preview", "source", "id"]


def question_frame(questions: Iterable[dict]):
    """The editable questions table (pandas): a delete tick box, the text, where it comes from."""
    import pandas as pd

    rows = [
        {
            "delete": False,
            "question": q["text"],
            "chunk preview": preview(q.get("chunk_preview"), 160)
            if q.get("chunk_preview")
            else "(chunk no longer exists)",
            "file": q.get("filename") or "",
            "pages": pages_label(q.get("page_start"), q.get("page_end")),
            "source": q.get("source") or "",
            "id": q["id"],
        }
        for q in questions
    ]
    return pd.DataFrame(rows, columns=QUESTION_COLUMNS)


def editor_changes(original, edited) -> tuple[dict[str, str], list[str]]:
    """What the user changed in the questions editor: ``({id: new text}, [ids to delete])``.

    Rows ticked for deletion are deleted (their text edits ignored); a text emptied to blank
    counts as a deletion too.
    """
    before = dict(zip(original["id"], original["question"]))
    updates: dict[str, str] = {}
    deletes: list[str] = []
    for _, row in edited.iterrows():
        qid = row["id"]
        if qid not in before:
            continue
        text = (
            ""
            if row["question"] is None or (isinstance(row["question"], float) and math.isnan(row["question"]))
            else str(row["question"])
        )
        if bool(row.get("delete")) or not text.strip():
            deletes.append(qid)
        elif text.strip() != str(before[qid]).strip():
            updates[qid] = text.strip()
    return updates, deletes


def dataset_rows(datasets: Iterable[dict]) -> list[dict]:
    return [
        {
            "name": d["name"],
            "role": d.get("role") or "",
            "questions": d["n_queries"],
            "corpus chunks": d["n_corpus"],
            "documents": ", ".join((d.get("meta") or {}).get("documents") or []) or "(imported: unknown)",
            "created": ago(d.get("created_at")),
            "id": d["id"],
        }
        for d in datasets
    ]


def dataset_label(d: dict) -> str:
    role = f" [{d['role']}]" if d.get("role") else ""
    return f"{d['name']}{role} · {d['n_queries']} questions · {d['n_corpus']} chunks"


def pick_default(datasets: list[dict], roles: tuple[str, ...]) -> int:
    """Index of the newest dataset whose role is the first of ``roles`` found (datasets come newest first)."""
    for role in roles:
        for i, d in enumerate(datasets):
            if d.get("role") == role:
                return i
    return 0


#: the roles of the sets an evaluation defaults to (Compare's evaluation set, the Train page's "You will evaluate on")
EVAL_ROLES = ("eval", "val")


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------


def run_rows(runs: Iterable[dict]) -> list[dict]:
    """The run history table: settings and results side by side."""
    rows = []
    for r in runs:
        cfg = (r.get("config") or {}).get("config") or {}
        res = r.get("result") or {}
        k = cfg.get("top_k", 5)
        base = res.get("base_metrics") or {}
        best = res.get("best_metrics") or {}
        b, a = base.get(f"mrr@{k}"), best.get(f"mrr@{k}")
        rows.append(
            {
                "run": r["name"],
                "status": r["status"],
                "adapter": {"finetune": "full fine-tune", "distill": "linear (distilled)"}.get(
                    r.get("kind"), cfg.get("adapter")
                ),
                "loss": "KL to the fine-tune" if r.get("kind") == "distill" else cfg.get("loss"),
                "lr": cfg.get("lr"),
                "epochs (set)": cfg.get("epochs"),
                "batch": cfg.get("batch_size"),
                "embedder": (r.get("config") or {}).get("embedder"),
                # hold-out: the best epoch; cross-validation: the epochs its refit trained (0: the identity)
                "epoch kept": res.get("best_epoch"),
                f"val MRR@{k} base": None if b is None else round(b, 4),
                f"val MRR@{k} best": None if a is None else round(a, 4),
                "Δ MRR": None if (a is None or b is None) else round(a - b, 4),
                # cross-validated runs have no hold-out: their out-of-fold estimate, (hit@k + MRR@k)/2 in points
                "CV gain (pt)": None if not res.get("selection") else round(100 * res["selection"]["gain"], 2),
                "seconds": res.get("seconds"),
                "created": ago(r.get("created_at")),
                "error": r.get("error") or "",
                "id": r["id"],
            }
        )
    return rows


def run_label(r: dict) -> str:
    return f"{r['name']} · started {ago(r.get('created_at'))} · {r['id']}"


def history_summary(history: list[dict]) -> dict[str, Any]:
    """Latest step/epoch, best epoch and its validation metrics from a run's history events."""
    steps = [h for h in history if h.get("type") == "step"]
    epochs = [h for h in history if h.get("type") == "epoch"]
    best = None
    for e in epochs:
        if e.get("best"):
            best = e
    phases = [h["message"] for h in history if h.get("type") == "phase"]
    return {
        "steps": len(steps),
        "last_loss": steps[-1]["loss"] if steps else None,
        "epochs_done": max((e["epoch"] for e in epochs), default=0),
        "best_epoch": best["epoch"] if best else None,
        "best_val": (best or {}).get("val") or {},
        "base_val": next((e.get("val") or {} for e in epochs if e.get("epoch") == 0), {}),
        "phase": phases[-1] if phases else "",
        "checkpoints": [h for h in history if h.get("type") == "checkpoint"],
    }


# ------------------------------------------------------------------------------------------------
# compare
# ------------------------------------------------------------------------------------------------
def comparison_label(e: dict) -> str:
    return f"{e['name']} · {ago(e.get('created_at'))} · {e['id']}"


def drilldown_rows(cmp, system: str, dataset=None) -> list[dict]:
    """Per-query baseline vs ``system``: question text (when the dataset is at hand), ranks, change."""
    frame = cmp.per_query_frame(system)
    rows = []
    for rec in frame.to_dict("records"):
        qid = rec["query_id"]
        rows.append(
            {
                "question": (dataset.queries.get(qid) if dataset is not None else None) or qid,
                "base rank": rec["base_rank"],
                "rank": rec["rank"],
                "change": rec["change"],
                "base RR": round(float(rec["base_rr"]), 3),
                "RR": round(float(rec["rr"]), 3),
                "query_id": qid,
            }
        )
    return rows


def ranked_above(cmp, system: str, query_id: str, dataset=None) -> dict[str, Any]:
    """For one query: its relevant chunk(s) and the chunks ``system`` ranked above the first one.

    Ranks are core's (ties count against the relevant chunk), so "above" is the first
    ``rank - 1`` non-relevant ids of the stored top list (the top ``max(k, 10)``); when the
    relevant chunk is below the stored list, ``beyond_stored`` is True.
    """
    res = cmp.results[system]
    i = res.query_ids.index(query_id)
    rank = float(res.first_rank[i])
    top = list(res.top_ids[i])
    relevant = list((dataset.relevant_docs.get(query_id) if dataset is not None else None) or [])
    others = [n for n in top if n not in relevant]
    n_above = int(rank) - 1 if math.isfinite(rank) else len(top)
    above = others[:n_above]
    beyond = n_above > len(others)

    def text(nid: str) -> str:
        return (
            dataset.corpus.get(nid) if dataset is not None else None
        ) or "(text not available: the dataset was deleted)"

    def where(nid: str) -> str:
        meta = (getattr(dataset, "node_meta", None) or {}).get(nid) if dataset is not None else None
        if not meta:
            return nid
        return f"{meta.get('filename')} · {pages_label(meta.get('page_start'), meta.get('page_end'))}"

    return {
        "rank": None if not math.isfinite(rank) else int(rank),
        "relevant": [{"id": n, "where": where(n), "text": text(n)} for n in relevant],
        "above": [{"rank": j + 1, "id": n, "where": where(n), "text": text(n)} for j, n in enumerate(above)],
        "beyond_stored": beyond,
    }


def comparison_detail_rows(cmp, ids: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The Compare page's full table from :meth:`Comparison.rows` values; the labels are made here.

    Per system: queries and every metric (rounded to 4 places), then for hit@k, MRR@k and nDCG
    the change against the baseline ("Δ m", signed), its paired bootstrap CI ("Δ m 95% CI"), the
    test's p ("m p"), the Holm-adjusted p ("m p (Holm)") and "m significant"; "—" on the
    baseline's row (no change to show); its id last.
    """
    from core.evaluation import NDCG_K, p_text

    k = cmp.top_k
    metrics = [f"hit@{k}", f"mrr@{k}", f"ndcg@{NDCG_K}", f"recall@{k}"]
    out = []
    for r in cmp.rows():
        row: dict[str, Any] = {"system": r["system"], "queries": r["queries"], **{m: round(r[m], 4) for m in metrics}}
        for m in metrics[:3]:
            has = f"delta_{m}" in r
            row[f"Δ {m}"] = f"{round(r[f'delta_{m}'], 4):+.3f}" if has else "—"
            row[f"Δ {m} 95% CI"] = f"[{r[f'ci_low_{m}']:+.3f}, {r[f'ci_high_{m}']:+.3f}]" if has else "—"
            row[f"{m} p"] = p_text(r[f"p_{m}"]) if has else "—"
            row[f"{m} p (Holm)"] = p_text(r[f"p_holm_{m}"]) if has else "—"
            row[f"{m} significant"] = ("yes" if r[f"significant_{m}"] else "no") if has else "—"
        row["id"] = (ids or {}).get(r["system"], "")
        out.append(row)
    return out
