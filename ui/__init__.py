"""Shared Streamlit widgets and small pure helpers for the dashboard pages.

``ui.helpers`` and ``ui.charts`` never import Streamlit (they shape core data for display and
are unit-testable); ``ui.state`` and ``ui.widgets`` hold the process-wide singletons and the
reusable widgets (job progress fragment, empty states, embedder picker, sidebar status).
"""
