"""The reproduction study (issue 13): arms that differ only in K(i), measured side by side.

Phase 1 pieces, each usable on its own: ``data`` (shapes whose class is global structure only),
``features`` (the study's classifier as a torch-fidelity feature extractor), ``generation_metrics``
(FD / precision / recall through torch-fidelity, class accuracy, memorisation), ``verdict``
(intervals over seeds and one computed verdict per paper claim), ``collect`` (paper-layout tables
from full-scale eval JSON) and ``report`` (report.md + report.json).
"""
