"""Run history turned into numbers: stage performance, bottlenecks, merchant health and the ETA model.

Pure pandas/numpy core (no Dagster): every function takes the ``stage_runs`` fact table as a DataFrame
(``frame.load_stage_runs``) and a fixed ``now``, so each number is testable on synthetic history.
"""
