"""The live training chart (plotly), drawn from a run's recorded history events (no Streamlit)."""

from __future__ import annotations

from typing import Any


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
        title=title, height=520, legend=dict(orientation="h", y=-0.15),
        margin=dict(t=60 if title else 30, b=10, l=10, r=10),
        uirevision="training",  # keep the user's zoom while the chart refreshes
    )
    return fig
