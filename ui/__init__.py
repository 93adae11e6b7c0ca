"""Shared Streamlit widgets and small pure helpers for the dashboard pages.

``ui.helpers`` never imports Streamlit (it shapes core data for display and is
unit-testable; charts live in ``core.reports``); ``ui.state`` and ``ui.widgets`` hold the process-wide singletons and the
reusable widgets (job progress fragment, empty states, embedder picker, sidebar status).
"""
