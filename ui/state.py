"""Process-wide singletons (workspace, job manager) and per-session secrets.

The workspace directory is resolved on every call (``$ADAPTERLAB_WORKSPACE`` or ``./workspace``)
and the singletons are cached *by that directory*, so one process serving (or testing) several
workspaces gets one :class:`~core.jobs.JobManager` per workspace, and every tab and page of one
workspace shares it (that is what lets a second tab see and cancel a running job).
"""

from __future__ import annotations

import os

import streamlit as st

from core.jobs import JobManager
from core.launch import job_manager as _new_job_manager
from core.llm import ENV_KEY
from core.workspace import Workspace, WorkspaceError, resolve_workspace_dir
from ui.helpers import md_escape

API_KEY_STATE = "adapterlab_api_key"  # session-only copy of a key typed into the form; never written
EMBEDDER_SETTING = "ui.base_embedder"


def ensure_router() -> None:
    """Make sure ``app.py`` (the router) runs, even when a fresh server's first visitor opens a page URL.

    Streamlit 1.67 treats an app with a ``pages/`` folder as a legacy multipage app until some
    session has called ``st.navigation``: until then a deep link such as ``/train`` runs
    ``pages/3_train.py`` alone (no sidebar status, no page config, the folder's file names as
    navigation). Call this first in every page: in that case it switches Streamlit to
    ``st.navigation`` mode and reruns, so ``app.py`` runs and routes to the same page.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # pragma: no cover - a Streamlit without this class has no legacy mode
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        st.rerun()


@st.cache_resource(show_spinner=False)
def _workspace(root: str) -> Workspace:
    return Workspace(root)


@st.cache_resource(show_spinner=False)
def _job_manager(root: str) -> JobManager:
    return _new_job_manager(_workspace(root))


def workspace() -> Workspace:
    root = str(resolve_workspace_dir())
    try:
        ws = _workspace(root)
        if not ws.catalog_path.exists():  # the folder was removed while the server ran: recreate it
            Workspace(root)
    except WorkspaceError as exc:  # a damaged catalog: say which file and what to do, not a traceback
        st.error(f"{md_escape(str(exc)[:1].upper() + str(exc)[1:])}.")
        st.stop()
    return ws


def job_manager() -> JobManager:
    return _job_manager(str(workspace().root))


# ------------------------------------------------------------------------------------------------
# API key: kept in this browser session only
# ------------------------------------------------------------------------------------------------
def session_api_key() -> str | None:
    """A key typed into the form in this session (never written anywhere), else None."""
    return st.session_state.get(API_KEY_STATE) or None


def api_configured() -> bool:
    """True when an API key is available: typed in this session or ``OPENAI_API_KEY``."""
    return bool(session_api_key() or os.environ.get(ENV_KEY))


def base_embedder() -> str:
    """The workspace's chosen base embedder spec (``default`` unless the user picked another)."""
    return workspace().get_setting(EMBEDDER_SETTING) or "default"


def set_base_embedder(spec: str) -> None:
    ws = workspace()
    if (ws.get_setting(EMBEDDER_SETTING) or "default") != spec:
        ws.set_setting(EMBEDDER_SETTING, spec)


_PERSISTED = "_adapterlab_persisted"  # a plain (never a widget's) key: a copy of the persisted widget values


#: the Questions page's generation settings: kept through visits to other pages (app.py's persist_widget_state)
#: and, from the last Generate, through a reload (the workspace's ``ui.generation``), so "Generate again with the
#: same settings resumes" holds after either. No button key: a button's value cannot be set.
GENERATION_KEYS = (
    "gen_kind",
    "gen_n",
    "gen_sample",
    "gen_offline_method",
    "llm_model",
    "llm_base_url",
    "llm_concurrency",
    "prompt_template",
)


def persist_widget_state(prefixes: tuple[str, ...]) -> None:
    """Keep the values of widgets whose key starts with ``prefixes`` when the user visits another page.

    Streamlit forgets a widget's value once a run does not draw it; re-assigning the key to itself
    on every run (app.py runs for every page) turns it into ordinary session state. Even so, a dashboard
    audit once saw the Train form come back at each field's minimum (1e-07 learning rate, 1 epoch) after
    several page visits; the trigger was not found (a run that skips this line, such as a fragment's
    rerun, is one way Streamlit could drop the key). So every value is also copied under a plain key,
    and a value missing from the session is put back from it.
    """
    saved = st.session_state.setdefault(_PERSISTED, {})
    for k, v in saved.items():
        if k not in st.session_state:
            st.session_state[k] = v
    for k in list(st.session_state.keys()):
        if isinstance(k, str) and k.startswith(prefixes):
            st.session_state[k] = saved[k] = st.session_state[k]
