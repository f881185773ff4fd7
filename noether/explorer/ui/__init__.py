"""The Streamlit app: widgets only, one module per view, the sidebar's editors by concern.

Everything shown here is computed by the pure functions of ``noether.explorer``. ``streamlit_app.py`` is the script
that ``streamlit run`` starts (``app.py`` at the repository root is the same two lines); ``main.main`` draws a page;
``registry.VIEWS`` lists the tabs; ``context``, ``state`` and ``widgets`` are shared by the views.
"""
