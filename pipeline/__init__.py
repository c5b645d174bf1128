"""The end-to-end pipeline behind ``make demo``: every stage as a subprocess, cached.

``python -m pipeline demo`` runs train → prune (har) → int8 → parity → export →
engine → firmware → mcu → runtime per task, then the report over all tasks.
A stage is skipped when its key (command, upstream outputs, inputs, code,
library versions) and the files it wrote are unchanged; see ``cache.py``.
"""
