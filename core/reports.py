"""Saved comparisons, charts and the stakeholder report (self-contained HTML, CSV).

:func:`save_comparison` keeps a :class:`~core.evaluation.Comparison` in the workspace
(``evaluations/<id>.json`` plus a catalog row); :func:`comparison_figures` builds the plotly
charts the dashboard shows; :func:`html_report` renders one HTML file with the tables and
charts inlined (plotly.js embedded, so it opens offline and can be mailed as is);
:func:`comparison_csv` is the table as CSV.

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


def save_comparison(ws: Workspace, cmp: Comparison, name: str | None = None, extra: dict[str, Any] | None = None) -> str:
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


def list_comparisons(ws: Workspace) -> list[dict[str, Any]]:
    return ws.query("SELECT * FROM evaluations ORDER BY created_at DESC")


def load_comparison(ws: Workspace, eval_id: str) -> tuple[Comparison, dict[str, Any]]:
    rows = ws.query("SELECT path FROM evaluations WHERE id=?", (eval_id,))
    if not rows:
        raise KeyError(f"no saved comparison {eval_id!r}")
    data = json.loads(ws.path(rows[0]["path"]).read_text(encoding="utf-8"))
    return Comparison.from_dict(data), data.get("extra", {})


def summary_rows(cmp: Comparison) -> list[dict[str, Any]]:
    """Rows for display: metrics, then per metric 'Δ (95% CI), p, significant?' against the baseline."""
    out = []
    for row in cmp.rows():
        r: dict[str, Any] = {"system": row["system"], "queries": row["queries"]}
        for m in cmp.metric_names:
            r[m] = round(row[m], 4)
        for m in cmp.metric_names:
            if f"Δ {m}" in row:
                lo, hi = row[f"{m} CI"]
                r[f"Δ {m}"] = round(row[f"Δ {m}"], 4)
                r[f"Δ {m} 95% CI"] = f"[{lo:+.3f}, {hi:+.3f}]"
                r[f"{m} p"] = round(row[f"{m} p"], 4)
                r[f"{m} significant"] = "yes" if row[f"{m} significant"] else "no"
        out.append(r)
    return out


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A value safe to put in a CSV cell: text that a spreadsheet would run as a formula (it
    starts with ``=``, ``+``, ``-``, ``@``, tab or carriage return) gets a leading ``'``, as
    OWASP advises; numbers (and every other non-text value) stay as they are."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def comparison_csv(cmp: Comparison) -> str:
    """The summary table as CSV, every text cell (and header) through :func:`csv_cell`; text is
    quoted (so a name holding a line break stays one cell), numbers are not."""
    import csv

    import pandas as pd

    rows = [{csv_cell(k): csv_cell(v) for k, v in r.items()} for r in summary_rows(cmp)]
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
        bar.add_bar(name=m, x=systems, y=[r[m] for r in rows], text=[f"{r[m]:.3f}" for r in rows], textposition="outside")
    bar.update_layout(barmode="group", title=f"Retrieval quality on {chart_text(cmp.dataset_name)} ({len(rows[0:1] and cmp.results[cmp.baseline].query_ids)} queries)",
                      yaxis_title="score", yaxis_range=[0, 1.08], legend_title="metric", height=420)
    figs["metrics"] = bar

    others = [r for r in rows if r["system"] != cmp.baseline]
    if others:
        delta = go.Figure()
        for m in (f"hit@{cmp.top_k}", f"mrr@{cmp.top_k}", "ndcg@10"):
            ys = [r[f"Δ {m}"] for r in others]
            lo = [r[f"Δ {m}"] - r[f"{m} CI"][0] for r in others]
            hi = [r[f"{m} CI"][1] - r[f"Δ {m}"] for r in others]
            delta.add_bar(name=m, x=[chart_text(r["system"]) for r in others], y=ys,
                          error_y=dict(type="data", symmetric=False, array=hi, arrayminus=lo))
        delta.add_hline(y=0, line_color="black", line_width=1)
        delta.update_layout(barmode="group", title=f"Change against {chart_text(cmp.baseline)} (95% paired bootstrap CI)",
                            yaxis_title="Δ score", height=380)
        figs["deltas"] = delta

    if histories:
        curves = go.Figure()
        for name, hist in histories.items():
            epochs = [h for h in hist if h.get("type") == "epoch" and h.get("val")]
            if epochs:
                curves.add_scatter(x=[h["epoch"] for h in epochs], y=[h["val"].get(f"mrr@{cmp.top_k}", h["val"].get("mrr@5")) for h in epochs],
                                   mode="lines+markers", name=f"{chart_text(name)} val MRR")
        curves.update_layout(title="Validation MRR by epoch (epoch 0 = untrained identity)", xaxis_title="epoch",
                             yaxis_title="MRR", height=360)
        figs["curves"] = curves
    return figs


def _table_html(rows: list[dict[str, Any]]) -> str:
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
            cls = ' class="sig"' if c.endswith("significant") and v == "yes" else ""
            cells.append(f"<td{cls}>{html.escape(str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def html_report(
    cmp: Comparison,
    histories: dict[str, list[dict[str, Any]]] | None = None,
    title: str = "AdapterLab retrieval report",
    notes: dict[str, Any] | None = None,
) -> str:
    """One self-contained HTML page: summary, table, charts (plotly.js inlined), method notes."""
    figs = comparison_figures(cmp, histories)
    parts = []
    first = True
    for fig in figs.values():
        parts.append(fig.to_html(full_html=False, include_plotlyjs="inline" if first else False))
        first = False
    rows = summary_rows(cmp)
    best = max((r for r in rows if r["system"] != cmp.baseline), key=lambda r: r[f"mrr@{cmp.top_k}"], default=None)
    headline = ""
    if best is not None:
        sig = best.get(f"mrr@{cmp.top_k} significant") == "yes"
        headline = (
            f"<p class='headline'>Best system: <b>{html.escape(best['system'])}</b>, MRR@{cmp.top_k} "
            f"{best[f'mrr@{cmp.top_k}']:.3f} vs {html.escape(cmp.baseline)} "
            f"{next(r for r in rows if r['system'] == cmp.baseline)[f'mrr@{cmp.top_k}']:.3f} "
            f"(Δ {best[f'Δ mrr@{cmp.top_k}']:+.3f}, 95% CI {best[f'Δ mrr@{cmp.top_k} 95% CI']}, "
            f"{'significant' if sig else 'not significant'} at p &lt; {cmp.alpha}).</p>"
        )
    meta = "".join(f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>" for k, v in (notes or {}).items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 2rem auto; max-width: 1100px; color: #1f2937; }}
table {{ border-collapse: collapse; font-size: 0.85rem; margin: 1rem 0; }}
th, td {{ border: 1px solid #d1d5db; padding: 4px 8px; text-align: right; }}
th {{ background: #f3f4f6; }} td:first-child, th:first-child {{ text-align: left; }}
td.sig {{ background: #dcfce7; font-weight: 600; }}
.headline {{ font-size: 1.1rem; background: #eff6ff; padding: .75rem 1rem; border-radius: 6px; }}
.small {{ color: #6b7280; font-size: .85rem; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="small">Evaluation set: {html.escape(cmp.dataset_name)} · {len(cmp.results[cmp.baseline].query_ids)} queries · k = {cmp.top_k} · generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}</p>
{headline}
<h2>Results</h2>
{_table_html(rows)}
<p class="small">hit@k: a relevant chunk is in the top k. MRR@k: 1/rank of the first relevant chunk within the top k, else 0.
nDCG@10 and recall@k as usual. Δ is against <b>{html.escape(cmp.baseline)}</b>, with a paired bootstrap 95% confidence
interval over queries; p-values: exact McNemar test for hit@k, Wilcoxon signed-rank for the graded metrics.</p>
<h2>Charts</h2>
{''.join(parts)}
{f'<h2>Settings</h2><ul>{meta}</ul>' if meta else ''}
</body></html>"""

MAX_STEP_POINTS = 1500


def has_curves(history: list[dict[str, Any]]) -> bool:
    """True once the history holds a training step or a validated epoch (something to plot)."""
    return any(h.get("type") == "step" or (h.get("type") == "epoch" and h.get("val")) for h in history)


def training_figure(history: list[dict[str, Any]], top_k: int = 5, title: str | None = None):
    """Two stacked panels sharing the step axis: training loss on top, validation hit@k and
    MRR@k per epoch below (epoch 0 = the untrained identity, i.e. the base model).

    The best epoch gets a star on the validation panel and a dotted line through both, so the
    chart shows at a glance where validation peaked (and whether it fell after).
    """
    from plotly.subplots import make_subplots

    steps = [h for h in history if h.get("type") == "step" and h.get("loss") is not None]
    if len(steps) > MAX_STEP_POINTS:  # a long run: plot every n-th step (the epoch means stay exact)
        stride = -(-len(steps) // MAX_STEP_POINTS)
        steps = steps[::stride] + ([steps[-1]] if (len(steps) - 1) % stride else [])
    epochs = [h for h in history if h.get("type") == "epoch" and h.get("val")]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.5, 0.5],
                        subplot_titles=("Training loss", f"Validation (hit@{top_k}, MRR@{top_k})"))
    if steps:
        fig.add_scatter(
            x=[h["step"] for h in steps], y=[h["loss"] for h in steps], mode="lines", name="loss per step",
            line=dict(color="#94a3b8", width=1.2), row=1, col=1,
            hovertemplate="step %{x}<br>loss %{y:.4f}<extra></extra>",
        )
    epoch_train = [h for h in epochs if h.get("train_loss") is not None]
    if epoch_train:
        fig.add_scatter(
            x=[h["step"] for h in epoch_train], y=[h["train_loss"] for h in epoch_train], mode="lines+markers",
            name="loss, epoch mean", line=dict(color="#334155", width=2), row=1, col=1,
            customdata=[h["epoch"] for h in epoch_train],
            hovertemplate="epoch %{customdata}<br>mean loss %{y:.4f}<extra></extra>",
        )
    for metric, color in ((f"hit@{top_k}", "#16a34a"), (f"mrr@{top_k}", "#2563eb")):
        pts = [h for h in epochs if metric in h["val"]]
        if pts:
            fig.add_scatter(
                x=[h["step"] for h in pts], y=[h["val"][metric] for h in pts], mode="lines+markers",
                name=f"val {metric}", line=dict(color=color, width=2), row=2, col=1,
                customdata=[h["epoch"] for h in pts],
                hovertemplate="epoch %{customdata}<br>" + metric + " %{y:.4f}<extra></extra>",
            )
    best = [h for h in epochs if h.get("best")]
    if best:
        b = best[-1]
        metric = f"mrr@{top_k}" if f"mrr@{top_k}" in b["val"] else next(iter(b["val"]))
        fig.add_scatter(
            x=[b["step"]], y=[b["val"][metric]], mode="markers", name=f"best epoch ({b['epoch']})",
            marker=dict(symbol="star", size=16, color="#f59e0b", line=dict(color="#92400e", width=1)),
            row=2, col=1, hovertemplate=f"best epoch {b['epoch']}<br>{metric} %{{y:.4f}}<extra></extra>",
        )
        fig.add_vline(x=b["step"], line_dash="dot", line_color="#f59e0b")
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_yaxes(title_text="score", row=2, col=1)
    fig.update_xaxes(title_text="optimizer step", rangemode="tozero", row=2, col=1)
    fig.update_layout(
        title=None if title is None else chart_text(title), height=520, legend=dict(orientation="h", y=-0.15),
        margin=dict(t=60 if title else 30, b=10, l=10, r=10),
        uirevision="training",  # keep the user's zoom while the chart refreshes
    )
    return fig
