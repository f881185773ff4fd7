"""The explorer engine: pure functions that validate scenarios and compute masks, weights, statistics and costs.

Nothing here but the ``ui`` subpackage (the Streamlit app) imports Streamlit; the app and the command line only call
these functions.
"""
