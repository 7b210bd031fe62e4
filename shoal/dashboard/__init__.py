"""``shoal dashboard``: a Streamlit app over the run registry, the event streams and the
history, with three views: a run live, a finished run's analysis, and the history of a
workflow. The app (:mod:`.app`) is a thin view over the pure folds of :mod:`.fold` and the
figures of :mod:`.figures`; it needs the ``dashboard`` extra (Streamlit and Plotly)."""
