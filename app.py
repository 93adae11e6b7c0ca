"""AdapterLab dashboard: the router only (page config, navigation, sidebar status).

Run it with ``streamlit run app.py``. With no configuration and no API key it works on the
bundled offline embedder and the offline question generator. Every page is a thin script
over ``core``; see ``ui/`` for the shared widgets.
"""

from core.threads import prefer_passive_waiting

prefer_passive_waiting()  # before anything loads torch: idle threads sleep instead of spinning (core/threads.py)

import streamlit as st  # noqa: E402

from ui.state import persist_widget_state  # noqa: E402
from ui.widgets import PAGES, sidebar_status  # noqa: E402

st.set_page_config(page_title="AdapterLab", page_icon=":material/tune:", layout="wide")

pages = [
    st.Page(path, title=title, icon=icon, default=(name == "documents"), url_path=name)
    for name, (path, title, icon) in PAGES.items()
]
persist_widget_state(("hp_", "train_adapter", "train_preset", "train_recipe"))  # training settings survive page changes
page = st.navigation({"AdapterLab": pages})
sidebar_status()
page.run()
