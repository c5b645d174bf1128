"""The parity report: one page per run of the pipeline, read from the stages' reports.

    python -m report build/har build/anomaly --out build/reports

writes ``report.md``, ``report.html`` (self-contained) and ``report.json``. It
re-runs nothing: every figure comes from a bundle's ``reports/*.json`` and
manifest; ``reference.npz`` and ``engine_outputs.npz`` are read for the anomaly
score plot only. It never imports TensorFlow or Keras.
"""
