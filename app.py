"""AdapterLab dashboard: the router only (page config, navigation, sidebar status).

Run it with ``streamlit run app.py``. With no configuration and no API key it works on the
bundled offline embedder and the offline question generator. Every page is a thin script
over ``core``; see ``ui/`` for the shared widgets.

Each page has its own URL: ``/documents``, ``/questions``, ``/train``, ``/compare``. Streamlit serves a
default page at the root only (a default Documents page made ``/documents`` "Page not found"), so the
default page is a hidden copy of Documents at the root, which forwards to ``/documents`` once a session.
"""

from core.threads import prefer_passive_waiting

prefer_passive_waiting()  # before anything loads torch: idle threads sleep instead of spinning (core/threads.py)

import streamlit as st  # noqa: E402

from ui.state import GENERATION_KEYS, persist_widget_state  # noqa: E402
from ui.widgets import PAGES, sidebar_status  # noqa: E402

ROOT_FORWARDED = "_adapterlab_root_forwarded"

st.set_page_config(page_title="AdapterLab", page_icon=":material/tune:", layout="wide")

pages = {name: st.Page(path, title=title, icon=icon, url_path=name) for name, (path, title, icon) in PAGES.items()}
path, title, icon = PAGES["documents"]
root = st.Page(path, title=title, icon=icon, url_path="home", default=True, visibility="hidden")
# training and question-generation settings survive page changes (no button key: a button cannot be set)
persist_widget_state(("hp_", "train_adapter", "train_preset", "train_recipe", *GENERATION_KEYS))
page = st.navigation({"AdapterLab": [*pages.values(), root]})  # root last: a link to a page's file opens its own URL
if page is root and not st.session_state.get(ROOT_FORWARDED):
    # Once a session: the forward pushes /documents onto the browser history, so forwarding again when Back
    # returns to "/" would send the user forward again and again (Back could never leave the app).
    st.session_state[ROOT_FORWARDED] = True
    st.switch_page(pages["documents"])
sidebar_status()
page.run()
