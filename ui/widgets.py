"""Reusable Streamlit pieces: page links with a fallback, empty states, the background-job
panel (a polling fragment), the base-embedder picker and the sidebar status."""

from __future__ import annotations

import os
from collections.abc import Callable

import streamlit as st
from streamlit.errors import StreamlitAPIException

from core.embedders import (
    BACKEND_LABELS,
    DEFAULT_API_BATCH_SIZE,
    DEFAULT_API_CONCURRENCY,
    DEFAULT_API_TIMEOUT,
    DEFAULT_MODEL_LABEL,
    split_backend,
    with_backend,
)
from core.llm import ENV_BASE_URL, ENV_KEY

from . import state
from .helpers import ago, md_escape

POLL_S = 1.0
SIDEBAR_POLL_S = 2.0

# page key -> (script path relative to app.py, title, icon)
PAGES = {
    "documents": ("pages/1_documents.py", "Documents", ":material/description:"),
    "questions": ("pages/2_questions.py", "Questions", ":material/quiz:"),
    "train": ("pages/3_train.py", "Train", ":material/model_training:"),
    "compare": ("pages/4_compare.py", "Compare", ":material/leaderboard:"),
}

CUSTOM_CODE_WARNING = (
    "Importing a Python module runs its code on this machine with your permissions. Allow it only for "
    "code you wrote or trust: nothing is imported until you tick the box and start."
)

API_HELP = (
    f"To use an API model, set `{ENV_KEY}` (and `{ENV_BASE_URL}` for an OpenAI-compatible server) in the "
    "environment before `streamlit run app.py`, or type a key on the **Questions** page (kept in this "
    "browser session only, never written to disk)."
)


# ------------------------------------------------------------------------------------------------
# links and empty states
# ------------------------------------------------------------------------------------------------
def link(page: str, label: str | None = None, icon: str | None = None) -> None:
    """``st.page_link`` to a page of the app; plain text when the page runs on its own (tests)."""
    path, title, page_icon = PAGES[page]
    label = label or f"Go to {title}"
    try:
        st.page_link(path, label=label, icon=icon or page_icon)
    except StreamlitAPIException:
        st.markdown(f"➡️ **{label}** (open **{title}** in the sidebar)")


def empty_state(message: str, page: str | None = None, label: str | None = None) -> None:
    """What to do next when there is nothing to show yet."""
    st.info(message, icon=":material/arrow_forward:")
    if page:
        link(page, label)


def next_step(message: str, page: str, label: str | None = None) -> None:
    with st.container(border=True):
        st.markdown(f"**Next step.** {message}")
        link(page, label)


def flash(message: str, kind: str = "success") -> None:
    """A message shown at the next run (use before ``st.rerun()``)."""
    st.session_state.setdefault("_adapterlab_flash", []).append((kind, message))


def show_flash() -> None:
    for kind, message in st.session_state.pop("_adapterlab_flash", []):
        getattr(st, kind)(message)


# ------------------------------------------------------------------------------------------------
# background jobs
# ------------------------------------------------------------------------------------------------
def _draw_active(job: dict, key: str) -> None:
    jm = state.job_manager()
    with st.container(border=True):
        head, btn = st.columns([5, 1], vertical_alignment="center")
        status = "waiting for the job before it" if job["status"] == "queued" else "running"
        head.markdown(f"**{md_escape(job['title'])}** · {status} · started {ago(job['created_at'])}")
        if jm.is_local(job["id"]):
            if btn.button(
                "Stop",
                key=f"{key}_stop_{job['id']}",
                icon=":material/stop_circle:",
                help="Stops after the current item; work finished so far is kept.",
            ):
                jm.cancel(job["id"])
                st.toast("Stopping… work finished so far is kept.")
        else:
            btn.caption("started by another process: stop it there")
        pct = float(job.get("progress") or 0.0)
        st.progress(min(max(pct, 0.0), 1.0), text=f"{pct:.0%} · {md_escape(job.get('message') or 'starting…')}")


def _draw_finished(job: dict, result_view: Callable[[dict], None] | None, retry_hint: str | None = None) -> None:
    status = job["status"]
    when = ago(job.get("updated_at"))
    if status == "done":
        if result_view is not None:
            result_view(job)
        else:
            st.success(f"{md_escape(job['title'])}: done ({when}).")
    elif status == "failed":
        st.error(f"**{md_escape(job['title'])}** failed ({when}): {md_escape(job.get('error') or 'unknown error')}")
        if retry_hint:
            st.caption(retry_hint)
    elif status == "cancelled":
        st.warning(
            f"**{md_escape(job['title'])}** was stopped ({when}): work finished before the stop is kept. "
            "Start it again to go on."
        )
        if result_view is not None and isinstance(job.get("result"), dict) and job["result"]:
            result_view(job)
    elif status == "interrupted":
        st.warning(f"**{md_escape(job['title'])}** was interrupted ({when}): {md_escape(job.get('error') or '')}")
        if retry_hint:
            st.caption(retry_hint)


def job_panel(
    kind: str,
    key: str,
    result_view: Callable[[dict], None] | None = None,
    live_extra: Callable[[], None] | None = None,
    show_last: bool = True,
    retry_hint: str | None = None,
) -> dict | None:
    """Show the jobs of ``kind``: live progress while any runs, else the latest one's outcome.

    While a job is queued or running, a fragment re-draws every second (polling only then).
    When one of those jobs ends, the fragment reruns the whole page once, so the page shows
    the result and stops polling. Everything is read from the workspace, so a reload, a
    second tab or a restarted server finds the same jobs. Returns the newest job (or None).
    """
    jm = state.job_manager()
    jm.reap()  # jobs of a process that died become 'interrupted' instead of 'running' forever
    active = jm.active(kind)
    if active:
        watched = {j["id"] for j in active}

        @st.fragment(run_every=POLL_S)
        def _poll() -> None:
            jm.reap()  # a job whose process died (server restart, CLI killed) ends as 'interrupted'
            now_active = jm.active(kind)
            if not watched <= {j["id"] for j in now_active}:
                st.rerun(scope="app")  # one of ours finished: redraw the page with its result
            for j in reversed(now_active):  # oldest first
                _draw_active(j, key)
            if live_extra is not None:
                live_extra()

        _poll()
        return active[0]
    latest = jm.list(kind=kind, limit=1)
    if latest and show_last:
        _draw_finished(latest[0], result_view, retry_hint)
    return latest[0] if latest else None


def any_active(kind: str) -> bool:
    return bool(state.job_manager().active(kind))


# ------------------------------------------------------------------------------------------------
# base embedder
# ------------------------------------------------------------------------------------------------
_EMB_KINDS = {
    "default": f"Bundled: {DEFAULT_MODEL_LABEL}",
    "st": "A sentence-transformers model (name or local path)",
    "api": "An API model (OpenAI-compatible)",
}


def api_endpoint() -> str:
    """Where API models are called: ``OPENAI_BASE_URL``, else OpenAI."""
    return os.environ.get(ENV_BASE_URL) or "OpenAI"


def api_request_fields(key: str) -> dict:
    """Timeout, batch size and concurrency of an API embedder's requests, side by side.

    Returns ``resolve_embedder`` kwargs (``api_timeout``, ``api_batch_size``, ``api_concurrency``).
    They do not change the vectors: recorded with a run or comparison, never in the cache's key.
    """
    c = st.columns(3)
    timeout = c[0].number_input(
        "Timeout (s)",
        1.0,
        3600.0,
        value=DEFAULT_API_TIMEOUT,
        step=10.0,
        key=f"{key}_timeout",
        help="Seconds to wait for one answer. A batch that gets none is split in halves; "
        "raise this for a slow local server.",
    )
    batch = c[1].number_input(
        "Batch size",
        1,
        2048,
        value=DEFAULT_API_BATCH_SIZE,
        key=f"{key}_batch",
        help="Texts per request, at most. Requests are also kept small enough for the "
        "server's measured speed to answer in half the timeout.",
    )
    conc = c[2].number_input(
        "Concurrency",
        1,
        32,
        value=DEFAULT_API_CONCURRENCY,
        key=f"{key}_concurrency",
        help="Requests in flight at once. Keep 1 for a local server (it works on one at a time); "
        "more can speed up a cloud API.",
    )
    return {"api_timeout": float(timeout), "api_batch_size": int(batch), "api_concurrency": int(conc)}


def embedder_options(key: str) -> dict:
    """The request settings drawn by :func:`embedder_picker` ``key`` for an API model (else ``{}``)."""
    return dict(st.session_state.get(f"{key}_api_options") or {})


# short radio labels (the model card and the CLI use core's long BACKEND_LABELS)
_BACKEND_SHORT = {"torch": "PyTorch", "onnx-int8": "ONNX int8", "onnx-fp32": "ONNX fp32"}


def embedder_picker(key: str, label: str = "Base embedder") -> str:
    """Choose the frozen base embedder; the choice is the workspace's default on every page.

    Returns a spec for :func:`core.embedders.resolve_embedder`: ``default``, a
    sentence-transformers name/path (either with ``@onnx-int8``/``@onnx-fp32`` when that backend
    is chosen), or ``openai:MODEL``.
    """
    spec0 = state.base_embedder()
    current, backend0 = (spec0, "torch") if spec0.startswith("openai:") else split_backend(spec0)
    kind0 = "default" if current == "default" else "api" if current.startswith("openai:") else "st"
    kind = st.radio(
        label,
        list(_EMB_KINDS),
        index=list(_EMB_KINDS).index(kind0),
        format_func=_EMB_KINDS.get,
        key=f"{key}_kind",
        help="The frozen model the adapter is trained on top of. Chunk sizes, "
        "training and comparisons all use this model; embeddings are cached in the workspace.",
    )
    if kind == "default":
        spec = "default"
    elif kind == "st":
        name = st.text_input(
            "Model name or path",
            value=current if kind0 == "st" else "",
            key=f"{key}_st",
            placeholder="e.g. BAAI/bge-small-en-v1.5 or /models/my-model",
            help="Any sentence-transformers model whose weights are on this machine (there is no network here).",
        )
        spec = name.strip() or "default"
        if not name.strip():
            st.caption("Type a model name or path; until then the bundled model is used.")
    else:
        model = st.text_input(
            "API embedding model", value=current[7:] if kind0 == "api" else "text-embedding-3-small", key=f"{key}_api"
        )
        spec = f"openai:{model.strip() or 'text-embedding-3-small'}"
        if not state.api_configured():
            st.warning("No API key is configured. " + API_HELP)
        else:
            st.caption(f"Endpoint: {md_escape(api_endpoint())} · key: set")
        st.session_state[f"{key}_api_options"] = api_request_fields(f"{key}_api")
    if kind != "api":
        st.session_state.pop(f"{key}_api_options", None)
        backend = st.radio(
            "Backend",
            list(BACKEND_LABELS),
            index=list(BACKEND_LABELS).index(backend0),
            format_func=lambda b: _BACKEND_SHORT.get(b, BACKEND_LABELS[b]),
            key=f"{key}_backend",
            horizontal=True,
            help="PyTorch: sentence-transformers (the default). ONNX Runtime runs the same model on the CPU, "
            "exported once into the workspace; int8 quantises its weights (measured 1.5x faster here, vectors within "
            "a cosine of about 0.99, an adapter trained on them 1.5 pt lower hit@5 on one split), fp32 gives the "
            "same vectors as PyTorch. Their vectors are cached apart from the PyTorch ones, so switching never "
            "mixes them. bench/README.md has the measurements.",
        )
        spec = with_backend(spec, backend)
    state.set_base_embedder(spec)
    return spec


# ------------------------------------------------------------------------------------------------
# sidebar
# ------------------------------------------------------------------------------------------------
def _sidebar_jobs(active: list[dict]) -> None:
    jm = state.job_manager()
    watched = {j["id"] for j in active}

    @st.fragment(run_every=SIDEBAR_POLL_S)
    def _poll() -> None:
        now = jm.active()
        if not watched <= {j["id"] for j in now}:
            st.rerun(scope="app")
        for j in now:
            pct = float(j.get("progress") or 0.0)
            st.progress(min(max(pct, 0.0), 1.0), text=f"{md_escape(j['title'])} · {pct:.0%}")

    _poll()


def sidebar_status() -> None:
    """Workspace path, what it holds, and the jobs running now."""
    ws = state.workspace()
    counts = ws.counts()
    with st.sidebar:
        st.caption("Workspace")
        st.code(str(ws.root), language=None, wrap_lines=True)
        a, b = st.columns(2)
        a.metric("Documents", counts["documents"])
        b.metric("Chunks", counts["chunks"])
        a.metric("Questions", counts["questions"])
        b.metric("Runs", counts["runs"])
        st.caption("Jobs")
        active = state.job_manager().active()
        if active:
            _sidebar_jobs(active)
        else:
            st.caption("No job running.")


def page_header(title: str, caption: str):
    """The common top of every page: route through app.py, the singletons, title and caption.

    Returns ``(workspace, job_manager)``.
    """
    state.ensure_router()  # a deep link on a fresh server must still go through app.py
    st.title(title)
    st.caption(caption)
    return state.workspace(), state.job_manager()
