"""The application layer: what reads and writes run directories (metrics, reports, explanations).

The layers below (``data``, ``model``, ``explain``, ``evaluate``, ``recommend``) are plain
objects and functions with explicit inputs; the CLI, the web app and the demo call these
functions, which load a run, call those layers and store the results beside the run.
"""
