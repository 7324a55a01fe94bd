"""Entropy-cliff analysis: theory (Eq. 1/2, Prop. 1, Tables 1/2, advisor), measured entropy, probe, plots."""
from .entropy import (
    EntropyProfile,
    codebook_utilisation,
    conditional_entropy,
    measured_transition_position,
    prefix_entropy_profile,
    validate_tokens,
)
from .plots import plot_entropy_cliff, plot_schedules
from .probe import first_k_linear_probe
from .report import cliff_report, format_table
from .theory import advise, prop1_bound, table1, table1_thresholds, table2, uniform_transition_position

__all__ = [
    "EntropyProfile",
    "advise",
    "cliff_report",
    "codebook_utilisation",
    "conditional_entropy",
    "first_k_linear_probe",
    "format_table",
    "measured_transition_position",
    "plot_entropy_cliff",
    "plot_schedules",
    "prefix_entropy_profile",
    "prop1_bound",
    "table1",
    "table1_thresholds",
    "table2",
    "uniform_transition_position",
    "validate_tokens",
]
