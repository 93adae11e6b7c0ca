"""Saved comparisons, charts and the stakeholder report (self-contained HTML, CSV).

:func:`save_comparison` keeps a :class:`~core.evaluation.Comparison` in the workspace
(``evaluations/<id>.json`` plus a catalog row); :func:`comparison_figures` builds the plotly
charts the dashboard shows; :func:`summary_figure` is the one chart of the summary (change
against the base model with 95% error bars); :func:`html_report` renders one HTML file with the
tables and charts inlined (plotly.js embedded, so it opens offline and can be mailed as is):
provenance and caveats first, then one sentence per system (:mod:`core.summary`), a compact
table, one chart, and the detail in collapsible appendix sections; :func:`comparison_csv` is
the table as CSV, systems by name with their ids in a column.

Names in them (systems, runs, datasets) are user text: charts get them through
:func:`chart_text` (plotly renders a subset of HTML in titles, labels and legends, so a run
named ``<a href=...>`` would be a live link), the HTML report through ``html.escape``, and
CSV cells through :func:`csv_cell` (a text cell starting with ``=``, ``+``, ``-``, ``@``, tab
or carriage return would be a formula in a spreadsheet).
"""

from __future__ import annotations

import html
import json
import time
from typing import Any

from .evaluation import Comparison
from .workspace import Workspace, atomic_write_json, new_id


def save_comparison(
    ws: Workspace, cmp: Comparison, name: str | None = None, extra: dict[str, Any] | None = None
) -> str:
    eval_id = new_id("eval-")
    rel = f"evaluations/{eval_id}.json"
    payload = cmp.to_dict()
    payload["extra"] = extra or {}
    atomic_write_json(ws.path(rel), payload, indent=None)
    with ws.db() as con:
        con.execute(
            "INSERT INTO evaluations(id, name, path, created_at) VALUES (?, ?, ?, ?)",
            (eval_id, name or cmp.dataset_name, rel, time.time()),
        )
    return eval_id


def update_comparison_extra(ws: Workspace, eval_id: str, extra: dict[str, Any]) -> None:
    """Replace a saved comparison's ``extra`` (e.g. to keep a context rebuilt for an old comparison)."""
    rows = ws.query("SELECT path FROM evaluations WHERE id=?", (eval_id,))
    if not rows:
        raise KeyError(f"no saved comparison {eval_id!r}")
    path = ws.path(rows[0]["path"])
    data = json.loads(path.read_text(encoding="utf-8"))
    data["extra"] = extra
    atomic_write_json(path, data, indent=None)


def list_comparisons(ws: Workspace) -> list[dict[str, Any]]:
    return ws.query("SELECT * FROM evaluations ORDER BY created_at DESC")


def load_comparison(ws: Workspace, eval_id: str) -> tuple[Comparison, dict[str, Any]]:
    rows = ws.query("SELECT path FROM evaluations WHERE id=?", (eval_id,))
    if not rows:
        raise KeyError(f"no saved comparison {eval_id!r}")
    data = json.loads(ws.path(rows[0]["path"]).read_text(encoding="utf-8"))
    return Comparison.from_dict(data), data.get("extra", {})


def metric_label(key: str) -> str:
    """A metric's key as the app writes it to people: ``mrr@5`` -> ``MRR@5``; hit-rate and nDCG keep theirs."""
    return "MRR" + key[3:] if key.startswith("mrr") else key


def labelled_rows(cmp: Comparison) -> list[dict[str, Any]]:
    """:meth:`Comparison.rows` keyed by display labels, values unformatted (the CLI's table and JSON):
    metrics, then per metric ``Δ m``, ``m CI`` (low, high), ``m p``, ``m p (Holm)``, ``m significant``."""
    out = []
    for row in cmp.rows():
        r: dict[str, Any] = {"system": row["system"], "queries": row["queries"]}
        r.update({m: row[m] for m in cmp.metric_names})
        for m in cmp.metric_names:
            if f"delta_{m}" in row:
                r.update(
                    {
                        f"Δ {m}": row[f"delta_{m}"],
                        f"{m} CI": (row[f"ci_low_{m}"], row[f"ci_high_{m}"]),
                        f"{m} p": row[f"p_{m}"],
                        f"{m} p (Holm)": row[f"p_holm_{m}"],
                        f"{m} significant": row[f"significant_{m}"],
                    }
                )
        out.append(r)
    return out


def summary_rows(cmp: Comparison) -> list[dict[str, Any]]:
    """Rows for display: metrics, then per metric 'Δ (95% CI), p, Holm-adjusted p, significant?'
    against the baseline (significant on the adjusted p)."""
    out = []
    for row in cmp.rows():
        r: dict[str, Any] = {"system": row["system"], "queries": row["queries"]}
        for m in cmp.metric_names:
            r[m] = round(row[m], 4)
        for m in cmp.metric_names:
            if f"delta_{m}" in row:
                r[f"Δ {m}"] = round(row[f"delta_{m}"], 4)
                r[f"Δ {m} 95% CI"] = f"[{row[f'ci_low_{m}']:+.3f}, {row[f'ci_high_{m}']:+.3f}]"
                r[f"{m} p"] = round(row[f"p_{m}"], 4)
                r[f"{m} p (Holm)"] = round(row[f"p_holm_{m}"], 4)
                r[f"{m} significant"] = "yes" if row[f"significant_{m}"] else "no"
        out.append(r)
    return out


def metric_detail_rows(cmp: Comparison, context: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Long form for the appendix: one row per (system, metric) with value, Δ, CI, test, p and Holm p."""
    from .evaluation import p_text, test_name

    rows = []
    ids = {r["system"]: r["id"] for r in with_ids([{"system": n} for n in cmp.results], context)}
    for r in summary_rows(cmp):
        for m in cmp.metric_names:
            row: dict[str, Any] = {"system": r["system"], "metric": m, "value": r[m]}
            if f"Δ {m}" in r:
                row.update(
                    {
                        "Δ": r[f"Δ {m}"],
                        "95% CI": r[f"Δ {m} 95% CI"],
                        "test": test_name(
                            m, cmp.results[cmp.baseline].per_query.get(m), cmp.results[r["system"]].per_query.get(m)
                        ),
                        "p": p_text(r[f"{m} p"]),
                        "p (Holm)": p_text(r[f"{m} p (Holm)"]),
                        "significant": r[f"{m} significant"],
                    }
                )
            row["id"] = ids.get(r["system"], "")
            rows.append(row)
    return rows


def with_ids(rows: list[dict[str, Any]], context: dict[str, Any] | None) -> list[dict[str, Any]]:
    """``rows`` with an ``id`` column after ``system`` (run id, checkpoint, model spec) from the context."""
    systems = (context or {}).get("systems") or {}
    out = []
    for r in rows:
        info = systems.get(r["system"]) or {}
        out.append(
            {"system": r["system"], "id": str(info.get("id", "")), **{k: v for k, v in r.items() if k != "system"}}
        )
    return out


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A value safe to put in a CSV cell: text that a spreadsheet would run as a formula (it
    starts with ``=``, ``+``, ``-``, ``@``, tab or carriage return) gets a leading ``'``, as
    OWASP advises; numbers (and every other non-text value) stay as they are."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def comparison_csv(cmp: Comparison, context: dict[str, Any] | None = None) -> str:
    """The summary table as CSV, systems by name with their ids in a column; every text cell (and
    header) through :func:`csv_cell`; text is quoted (so a name holding a line break stays one
    cell), numbers are not."""
    import csv

    import pandas as pd

    rows = [{csv_cell(k): csv_cell(v) for k, v in r.items()} for r in with_ids(summary_rows(cmp), context)]
    return pd.DataFrame(rows).to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC)


def chart_text(value: Any) -> str:
    """User text made literal for a plotly title, axis label, legend or hover text (plotly
    renders ``<a href>``, ``<b>``, ``<br>`` and entities there; escaped, they show as typed)."""
    return html.escape(str(value), quote=False)


def comparison_figures(cmp: Comparison, histories: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """Plotly figures: metric bars (with CI error bars on the deltas) and training curves."""
    import plotly.graph_objects as go

    figs: dict[str, Any] = {}
    rows = cmp.rows()
    systems = [chart_text(r["system"]) for r in rows]
    bar = go.Figure()
    for m in cmp.metric_names:
        bar.add_bar(
            name=m, x=systems, y=[r[m] for r in rows], text=[f"{r[m]:.3f}" for r in rows], textposition="outside"
        )
    bar.update_layout(
        barmode="group",
        title=f"Retrieval quality on {chart_text(cmp.dataset_name)} ({len(rows[0:1] and cmp.results[cmp.baseline].query_ids)} queries)",
        yaxis_title="score",
        yaxis_range=[0, 1.08],
        legend_title="metric",
        height=420,
    )
    figs["metrics"] = bar

    others = [r for r in rows if r["system"] != cmp.baseline]
    if others:
        delta = go.Figure()
        for m in (f"hit@{cmp.top_k}", f"mrr@{cmp.top_k}", "ndcg@10"):
            ys = [r[f"delta_{m}"] for r in others]
            lo = [r[f"delta_{m}"] - r[f"ci_low_{m}"] for r in others]
            hi = [r[f"ci_high_{m}"] - r[f"delta_{m}"] for r in others]
            delta.add_bar(
                name=m,
                x=[chart_text(r["system"]) for r in others],
                y=ys,
                error_y=dict(type="data", symmetric=False, array=hi, arrayminus=lo),
            )
        delta.add_hline(y=0, line_color="black", line_width=1)
        delta.update_layout(
            barmode="group",
            title=f"Change against {chart_text(cmp.baseline)} (95% paired bootstrap CI)",
            yaxis_title="Δ score",
            height=380,
        )
        figs["deltas"] = delta

    if histories:
        curves = go.Figure()
        for name, hist in histories.items():
            epochs = [h for h in hist if h.get("type") == "epoch" and h.get("val")]
            if epochs:
                curves.add_scatter(
                    x=[h["epoch"] for h in epochs],
                    y=[h["val"].get(f"mrr@{cmp.top_k}", h["val"].get("mrr@5")) for h in epochs],
                    mode="lines+markers",
                    name=f"{chart_text(name)} val MRR",
                )
        curves.update_layout(
            title="Validation MRR by epoch (epoch 0 = untrained identity)",
            xaxis_title="epoch",
            yaxis_title="MRR",
            height=360,
        )
        figs["curves"] = curves
    return figs


def _table_html(rows: list[dict[str, Any]], css: str | None = None) -> str:
    if not rows:
        return "<p>(no rows)</p>"
    cols = list(rows[0])
    for r in rows[1:]:
        for c in r:
            if c not in cols:
                cols.append(c)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cls = ""
            if c.endswith("significant") and str(v).startswith(("yes", "hit@", "MRR@")):
                cls = ' class="sigbad"' if "worse" in str(v) else ' class="sig"'
            cells.append(f"<td{cls}>{html.escape(str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cls = f' class="{css}"' if css else ""
    return f"<div class='scroll'><table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def _short(name: str, n: int = 42) -> str:
    return name if len(name) <= n else name[: n - 1] + "\u2026"


def _wrap_label(name: str, width: int = 30, lines: int = 3) -> str:
    """A system name for a chart's axis in up to ``lines`` lines of about ``width`` characters (plotly ``<br>``),
    broken at its " · " parts, then words: a run name keeps its distinguishing end instead of an ellipsis."""
    tokens: list[tuple[str, str]] = []  # (the separator before it, a part or a word of a long part)
    for i, part in enumerate(name.split(" · ")):
        for j, word in enumerate(part.split(" ") if len(part) > width else [part]):
            tokens.append((" · " if i and not j else " ", word))
    out: list[str] = []
    for sep, word in tokens:
        if out and len(out[-1]) + len(sep) + len(word) <= width:
            out[-1] += sep + word
        else:  # a new line starts with the token itself, its separator dropped
            out.append(word)
    if len(out) > lines:
        out = out[: lines - 1] + [_short(" ".join(out[lines - 1 :]), width)]
    return "<br>".join(chart_text(line) for line in out)


def summary_figure(cmp: Comparison, context: dict[str, Any] | None = None):
    """The summary's one chart: change in hit@k and MRR@k against the baseline, in points, with
    95% CI error bars, one row per system (checkpoints left to the appendix). None when there is
    nothing to compare with. Each value is written beyond the end of its interval, where no whisker
    crosses it (a minus sign under a whisker reads as a plus)."""
    import plotly.graph_objects as go

    from .summary import main_systems

    names = main_systems(cmp, context)
    if not names:
        return None
    k = cmp.top_k
    fig = go.Figure()
    lows: list[float] = []
    highs: list[float] = []
    # two bars a row at fixed offsets (centres at -0.2 and +0.2 of the row), so each label can sit beside its own bar
    for j, (metric, label, color) in enumerate(
        (
            (f"hit@{k}", f"hit@{k} (points)", "#16a34a"),
            (f"mrr@{k}", f"MRR@{k} (\u00d7100)", "#2563eb"),
        )
    ):
        sig = [cmp.significance[n][metric] for n in names]
        d = [100 * x["delta"] for x in sig]
        lo, hi = [100 * x["ci_low"] for x in sig], [100 * x["ci_high"] for x in sig]
        lows += lo + d
        highs += hi + d
        fig.add_bar(
            name=label,
            orientation="h",
            y=list(range(len(names))),
            x=d,
            width=0.36,
            offset=-0.38 + 0.4 * j,
            marker_color=color,
            error_x=dict(
                type="data",
                symmetric=False,
                array=[h - v for h, v in zip(hi, d)],
                arrayminus=[v - low for low, v in zip(lo, d)],
                color="#111827",
                thickness=1.5,
            ),
            customdata=[[chart_text(n), a, b] for n, a, b in zip(names, lo, hi)],
            hovertemplate="%{customdata[0]}<br>"
            + label
            + ": %{x:+.1f} (95% CI %{customdata[1]:+.1f} to %{customdata[2]:+.1f})<extra></extra>",
        )
        for i, (v, a, b) in enumerate(zip(d, lo, hi)):
            right = v >= 0
            fig.add_annotation(
                x=max(b, v) if right else min(a, v),
                y=i - 0.2 + 0.4 * j,
                text=f"{v:+.1f}".replace("-", "\u2212"),
                showarrow=False,
                xanchor="left" if right else "right",
                xshift=4 if right else -4,
                font=dict(color=color, size=12),
            )
    span = max(highs + [0.0]) - min(lows + [0.0]) or 1.0
    fig.add_vline(x=0, line_color="#111827", line_width=1)
    fig.update_layout(
        barmode="overlay",
        title=f"Change against the {chart_text(cmp.baseline)}, with 95% confidence intervals",
        xaxis=dict(
            title="change in points (0 = same as the base model)",
            range=[min(lows + [0.0]) - 0.12 * span, max(highs + [0.0]) + 0.12 * span],  # room for the labels
        ),
        yaxis=dict(
            autorange="reversed",
            tickmode="array",
            tickvals=list(range(len(names))),
            ticktext=[_wrap_label(n) for n in names],
            automargin=True,
        ),
        height=190 + 80 * len(names),
        # under the axis title, measured from the figure's bottom edge: it cannot cover the title
        legend=dict(orientation="h", yref="container", y=0.01, yanchor="bottom", x=0, xanchor="left"),
        margin=dict(l=10, r=30, t=50, b=75),
    )
    return fig


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _caveats_html(items: list[dict[str, str]]) -> str:
    return "".join(f"<div class='caveat {_esc(c['level'])}'>{_esc(c['text'])}</div>" for c in items)


def _dl_html(items: list[tuple[str, str]]) -> str:
    return "<dl class='prov'>" + "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in items) + "</dl>"


def _details(summary: str, body: str, open_: bool = False) -> str:
    return f"<details{' open' if open_ else ''}><summary>{_esc(summary)}</summary><div class='inner'>{body}</div></details>"


def _leakage_html(context: dict[str, Any] | None) -> str:
    from .summary import leakage_entries, overlap_text

    parts = []
    for entry, rep in leakage_entries(context):
        who = ", ".join(entry.get("systems") or [])
        train = (entry.get("train_set") or {}).get("name", "")
        if rep is None:
            parts.append(f"<p><b>{_esc(who)}</b>: {_esc(entry.get('error') or 'not checked')}</p>")
            continue
        parts.append(
            f"<p><b>{_esc(who)}</b>, trained on <b>{_esc(train)}</b> ({rep.n_train} questions): "
            f"{_esc(overlap_text(rep, (context or {}).get('excluded')))}.</p>"
        )
        if rep.examples:
            parts.append(
                _table_html(
                    [
                        {"evaluation question": e["eval"], "training question": e["train"], "cosine": e["cosine"]}
                        for e in rep.examples
                    ],
                    css="text",
                )
            )
    return "".join(parts)


def _settings_html(context: dict[str, Any] | None) -> str:
    rows = []
    for name, info in ((context or {}).get("systems") or {}).items():
        settings = info.get("settings") or {}
        chosen = info.get("chosen") or {}
        rows.append(
            {
                "system": name,
                "kind": info.get("kind", ""),
                "id": info.get("id", ""),
                "settings": ", ".join(f"{k}={v}" for k, v in settings.items()) or "\u2014",
                "chosen by cross-validation": (
                    ("" if chosen.get("train") else "the untrained identity; ")
                    + ", ".join(f"{k}={chosen.get(k)}" for k in ("epochs", "lr", "alpha"))
                )
                if chosen
                else "\u2014",
            }
        )
    return _table_html(rows, css="text") if rows else ""


def html_report(
    cmp: Comparison,
    histories: dict[str, list[dict[str, Any]]] | None = None,
    title: str = "AdapterLab retrieval report",
    notes: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
) -> str:
    """One self-contained HTML page a stakeholder reads in a minute (plotly.js inlined).

    First screen: what was measured (evaluation set, question sources, documents, base model,
    date), the caveats that apply (leakage in red, selection on the evaluation set, pseudo-queries),
    one sentence per system, a compact table, and one chart with error bars. Then an appendix in
    ``<details>`` sections: every metric with p-values and tests, the checkpoints, training curves,
    the leakage check, run settings and ``notes``.
    """
    from .summary import caveats, checkpoint_rows, compact_rows, provenance_items, summary_sentences, system_provenance

    js_done = False

    def fig_html(fig) -> str:
        nonlocal js_done
        out = fig.to_html(
            full_html=False, include_plotlyjs=False if js_done else "inline", config={"displaylogo": False}
        )
        js_done = True
        return out

    k = cmp.top_k
    sentences = "".join(f"<li>{_esc(s)}</li>" for s in summary_sentences(cmp, context))
    chart = summary_figure(cmp, context)
    chart_html = fig_html(chart) if chart is not None else ""  # first: it carries plotly.js for the rest
    provenance = system_provenance(cmp, context)
    main_prov = [
        p for p in provenance if not (((context or {}).get("systems") or {}).get(p["system"]) or {}).get("checkpoint")
    ]
    appendix = []
    m = len([n for n in cmp.results if n != cmp.baseline])
    appendix.append(
        _details(
            "Every metric, p-values and tests",
            _table_html(metric_detail_rows(cmp, context))
            + f"<p class='small'>hit@k: a relevant chunk is in the top k. MRR@k: 1/rank of the first relevant chunk within the "
            f"top k, else 0. nDCG@10 and recall@k as usual. \u0394 is against <b>{_esc(cmp.baseline)}</b>, with a paired "
            "bootstrap 95% confidence interval over questions (not adjusted for the number of systems). Tests: exact McNemar "
            "for hit@k and for any metric that is 0 or 1 on every question, Wilcoxon signed-rank for the other graded "
            "metrics. p (Holm): Holm's step-down adjustment, one family per metric: among the systems compared with "
            f"the baseline, and for each checkpoint among all {m} comparisons; \u201csignificant\u201d means p (Holm) "
            f"&lt; {cmp.alpha}.</p>",
        )
    )
    ck_rows = checkpoint_rows(cmp, context)
    if ck_rows:
        appendix.append(
            _details(
                f"Checkpoints ({len(ck_rows)}): compared on the evaluation set",
                _table_html(ck_rows)
                + "<p class='small'>Picking the best checkpoint on the set it is measured on overstates "
                "its gain: confirm the choice on questions it was not picked on.</p>",
            )
        )
    figs = comparison_figures(cmp, histories) if histories else {}
    if "curves" in figs:
        appendix.append(
            _details(
                "Training curves",
                fig_html(figs["curves"])
                + "<p class='small'>Epoch 0 is the untrained identity (the base model): a curve that "
                "peaks and falls shows over-training.</p>",
            )
        )
    leak = _leakage_html(context)
    if leak:
        appendix.append(_details("Leakage check: training sets against the evaluation set", leak))
    ck_prov = [p for p in provenance if p not in main_prov]
    settings = _settings_html(context) + (_table_html(ck_prov, css="text") if ck_prov else "")
    meta = "".join(f"<li><b>{_esc(kk)}</b>: {_esc(v)}</li>" for kk, v in (notes or {}).items())
    if meta:
        settings += f"<ul>{meta}</ul>"
    if settings:
        appendix.append(_details("Run settings and ids", settings))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>
<style>
body {{ font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 1.5rem auto; max-width: 1100px; color: #1f2937; padding: 0 1rem; }}
h1 {{ font-size: 1.6rem; margin: 0 0 .5rem; }} h2 {{ font-size: 1.2rem; margin: 1.4rem 0 .5rem; }}
table {{ border-collapse: collapse; font-size: 0.85rem; margin: .6rem 0; }}
th, td {{ border: 1px solid #d1d5db; padding: 4px 8px; text-align: right; }}
th {{ background: #f3f4f6; }} td:first-child, th:first-child {{ text-align: left; }}
table.compact {{ font-size: 0.95rem; }} table.text td, table.text th {{ text-align: left; }}
td.sig {{ background: #dcfce7; font-weight: 600; }} td.sigbad {{ background: #fee2e2; font-weight: 600; }}
.summary {{ font-size: 1.05rem; background: #eff6ff; padding: .6rem 1rem .6rem 2rem; border-radius: 6px; margin: .6rem 0; }}
.summary li {{ margin: .25rem 0; }}
.caveat {{ padding: .5rem .8rem; border-radius: 4px; margin: .4rem 0; font-size: .92rem; border-left: 5px solid; }}
.caveat.error {{ background: #fef2f2; border-color: #dc2626; color: #7f1d1d; font-weight: 600; }}
.caveat.warning {{ background: #fffbeb; border-color: #d97706; color: #78350f; }}
.caveat.info {{ background: #f0f9ff; border-color: #0284c7; color: #0c4a6e; }}
dl.prov {{ display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; font-size: .9rem; margin: .4rem 0; }}
dl.prov dt {{ font-weight: 600; color: #374151; }} dl.prov dd {{ margin: 0; }}
div.scroll {{ overflow-x: auto; }}
details {{ border: 1px solid #e5e7eb; border-radius: 6px; margin: .5rem 0; padding: .4rem .8rem; }}
details summary {{ cursor: pointer; font-weight: 600; }}
.small {{ color: #6b7280; font-size: .85rem; }}
</style></head><body>
<h1>{_esc(title)}</h1>
{_dl_html(provenance_items(cmp, context))}
{_caveats_html(caveats(cmp, context))}
<h2>Summary</h2>
<ul class="summary">{sentences}</ul>
{_table_html(compact_rows(cmp, context), css="compact")}
<p class="small">hit@{k}: the right passage is among the first {k} results. \u0394: change against the {_esc(cmp.baseline)}
in points (hundredths of hit@{k} or of MRR@{k}), with its 95% confidence interval. Significant: p &lt; {cmp.alpha} after
Holm's adjustment among the systems compared (checkpoints apart); the intervals are each system's own, not adjusted, so with several systems one
that just clears 0 can still read “no”.</p>
{chart_html}
{("<h2>Where each adapter comes from</h2>" + _table_html(main_prov, css="text")) if main_prov else ""}
<h2>Appendix</h2>
{"".join(appendix)}
</body></html>"""


MAX_STEP_POINTS = 2000


def thin_series(x: list[Any], y: list[float], max_points: int = MAX_STEP_POINTS) -> tuple[list[Any], list[float]]:
    """At most ``max_points`` points of a long series for a chart, keeping its shape.

    The series is cut into ``max_points // 2`` equal runs of points; each run keeps its lowest
    and its highest point, in their order, so spikes and dips survive (a plain every-n-th point
    would drop them). The first and the last point are always kept: a live chart ends exactly
    where the run is. A series that already fits is returned as it is.
    """
    n = len(y)
    if n <= max_points:
        return list(x), list(y)
    import numpy as np

    buckets = max(1, (max_points - 2) // 2)
    edges = np.linspace(0, n, buckets + 1).astype(int)
    arr = np.asarray(y, dtype=float)
    keep = {0, n - 1}
    for a, b in zip(edges[:-1], edges[1:]):
        if b > a:
            seg = arr[a:b]
            keep.add(a + int(np.argmin(seg)))
            keep.add(a + int(np.argmax(seg)))
    idx = sorted(keep)
    return [x[i] for i in idx], [y[i] for i in idx]


def has_curves(history: list[dict[str, Any]]) -> bool:
    """True once the history holds a training step or a validated epoch (something to plot)."""
    return any(h.get("type") == "step" or (h.get("type") == "epoch" and h.get("val")) for h in history)


def training_figure(
    history: list[dict[str, Any]], top_k: int = 5, title: str | None = None, max_points: int = MAX_STEP_POINTS
):
    """Two stacked panels sharing the step axis: training loss on top, validation hit@k and
    MRR@k per epoch below (epoch 0 = the untrained identity, i.e. the base model). Without a
    validated epoch (a cross-validated run's refit has no hold-out) the loss panel alone.

    The best epoch gets a star on the validation panel and a dotted line through both, so the
    chart shows at a glance where validation peaked (and whether it fell after). The per-step
    loss is thinned to ``max_points`` (:func:`thin_series`); a live chart passes fewer.
    """
    from plotly.subplots import make_subplots

    steps = [h for h in history if h.get("type") == "step" and h.get("loss") is not None]
    # a long run: the per-step loss is thinned to its min/max envelope (the epoch means stay exact)
    step_x, step_y = thin_series([h["step"] for h in steps], [h["loss"] for h in steps], max_points)
    epochs = [h for h in history if h.get("type") == "epoch" and h.get("val")]
    # no validation epochs (cross-validated runs refit without a hold-out): the loss panel alone
    rows = 2 if epochs else 1
    fig = make_subplots(
        rows=rows,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        row_heights=[0.5, 0.5] if rows == 2 else None,
        subplot_titles=("Training loss", f"Validation (hit@{top_k}, MRR@{top_k})")[:rows],
    )
    if steps:
        fig.add_scatter(
            x=step_x,
            y=step_y,
            mode="lines",
            name="loss per step" + (" (min/max per span)" if len(step_x) < len(steps) else ""),
            line=dict(color="#94a3b8", width=1.2),
            row=1,
            col=1,
            hovertemplate="step %{x}<br>loss %{y:.4f}<extra></extra>",
        )
    epoch_train = [h for h in epochs if h.get("train_loss") is not None]
    if epoch_train:
        fig.add_scatter(
            x=[h["step"] for h in epoch_train],
            y=[h["train_loss"] for h in epoch_train],
            mode="lines+markers",
            name="loss, epoch mean",
            line=dict(color="#334155", width=2),
            row=1,
            col=1,
            customdata=[h["epoch"] for h in epoch_train],
            hovertemplate="epoch %{customdata}<br>mean loss %{y:.4f}<extra></extra>",
        )
    for metric, color in ((f"hit@{top_k}", "#16a34a"), (f"mrr@{top_k}", "#2563eb")):
        pts = [h for h in epochs if metric in h["val"]]
        if pts:
            fig.add_scatter(
                x=[h["step"] for h in pts],
                y=[h["val"][metric] for h in pts],
                mode="lines+markers",
                name=f"val {metric_label(metric)}",
                line=dict(color=color, width=2),
                row=2,
                col=1,
                customdata=[h["epoch"] for h in pts],
                hovertemplate="epoch %{customdata}<br>" + metric_label(metric) + " %{y:.4f}<extra></extra>",
            )
    best = [h for h in epochs if h.get("best")]
    if best:
        b = best[-1]
        metric = f"mrr@{top_k}" if f"mrr@{top_k}" in b["val"] else next(iter(b["val"]))
        fig.add_scatter(
            x=[b["step"]],
            y=[b["val"][metric]],
            mode="markers",
            name=f"best epoch ({b['epoch']})",
            marker=dict(symbol="star", size=16, color="#f59e0b", line=dict(color="#92400e", width=1)),
            row=2,
            col=1,
            hovertemplate=f"best epoch {b['epoch']}<br>{metric} %{{y:.4f}}<extra></extra>",
        )
        fig.add_vline(x=b["step"], line_dash="dot", line_color="#f59e0b")
    fig.update_yaxes(title_text="loss", row=1, col=1)
    if rows == 2:
        fig.update_yaxes(title_text="score", row=2, col=1)
    fig.update_xaxes(title_text="optimizer step", rangemode="tozero", row=rows, col=1)
    fig.update_layout(
        title=None if title is None else chart_text(title),
        height=520 if rows == 2 else 320,
        legend=dict(orientation="h", y=-0.15),
        margin=dict(t=60 if title else 30, b=10, l=10, r=10),
        uirevision="training",  # keep the user's zoom while the chart refreshes
    )
    return fig


def cv_figure(history: list[dict[str, Any]], top_k: int = 5, title: str | None = None):
    """Cross-validation estimate per epoch: the mean across folds of validation hit@k and MRR@k
    with a ±1 standard-deviation band (epoch 0 = the untrained identity), one pair per learning
    rate, and the chosen epoch starred. One noisy curve becomes an estimate with its spread."""
    import plotly.graph_objects as go

    points = [h for h in history if h.get("type") == "cv"]
    chosen = next((h for h in reversed(history) if h.get("type") == "selection"), None)
    fig = go.Figure()
    colors = {f"hit@{top_k}": ("#16a34a", "rgba(22,163,74,0.15)"), f"mrr@{top_k}": ("#2563eb", "rgba(37,99,235,0.15)")}
    lrs = list(dict.fromkeys(h["lr"] for h in points))
    for lr in lrs:
        pts = sorted((h for h in points if h["lr"] == lr), key=lambda h: h["epoch"])
        x = [h["epoch"] for h in pts]
        suffix = f" (lr {lr:g})" if len(lrs) > 1 else ""
        for metric, (line, band) in colors.items():
            if f"{metric} mean" not in pts[0]:
                continue
            mean = [h[f"{metric} mean"] for h in pts]
            std = [h[f"{metric} std"] for h in pts]
            fig.add_scatter(
                x=x + x[::-1],
                y=[m + s for m, s in zip(mean, std)] + [m - s for m, s in zip(mean, std)][::-1],
                fill="toself",
                fillcolor=band,
                line=dict(width=0),
                hoverinfo="skip",
                showlegend=False,
            )
            fig.add_scatter(
                x=x,
                y=mean,
                mode="lines+markers",
                name=f"{metric_label(metric)}, mean of folds{suffix}",
                line=dict(color=line, width=2),
                customdata=std,
                hovertemplate="epoch %{x}<br>" + metric_label(metric) + " %{y:.4f} ± %{customdata:.4f}<extra></extra>",
            )
    if chosen:
        ep = chosen["epochs"] if chosen["train"] else 0
        pt = next((h for h in points if h["lr"] == chosen["lr"] and h["epoch"] == ep), None)
        alpha = float(chosen.get("alpha", 1.0))
        own = chosen.get("shrunk_point") or {}
        if chosen["train"] and alpha != 1.0 and f"mrr@{top_k} mean" in own:
            # The curves are the full step (alpha 1): a shrunk choice is starred at its own out-of-fold estimate,
            # which can sit above the identity where the alpha-1 curve at that epoch sits below it.
            pt = own
        shrunk = (chosen.get("shrinkage") or {}).get(f"{alpha:g}") if chosen["train"] and alpha != 1.0 else None
        if pt and f"mrr@{top_k} mean" in pt:
            name = "chosen" + (f" (epoch {ep})" if chosen["train"] else " (identity)")
            if shrunk is not None:
                name = f"chosen: epoch {ep}, shrunk by alpha {alpha:g} ({100 * shrunk:+.2f} pt" + (
                    "; its MRR, the curves are alpha 1)" if pt is own else "; curves = alpha 1)"
                )
            fig.add_scatter(
                x=[ep],
                y=[pt[f"mrr@{top_k} mean"]],
                mode="markers",
                name=name,
                marker=dict(symbol="star", size=16, color="#f59e0b", line=dict(color="#92400e", width=1)),
            )
    fig.update_layout(
        title=chart_text(title) if title else "Cross-validated estimate (mean across folds, band = ±1 std)",
        height=340,
        xaxis_title="epoch (0 = untrained identity)",
        yaxis_title="validation score",
        legend=dict(orientation="h", y=-0.25),
        margin=dict(t=50, b=10, l=10, r=10),
    )
    return fig
