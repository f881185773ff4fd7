"""The explorer engine: pure functions that validate scenarios and compute masks, weights, statistics and costs.

Nothing here imports Streamlit; the app and the command line only call these functions.
"""
