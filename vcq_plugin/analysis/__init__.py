"""Entropy-cliff analysis: theory (Eq. 1/2, Prop. 1, Tables 1/2, advisor), measured entropy and cliff, probe, plots."""
from .entropy import (
    DEFAULT_TOLERANCE_BITS,
    EntropyProfile,
    codebook_usage,
    codebook_utilisation,
    conditional_entropy,
    measured_transition_position,
    prefix_entropy,
    prefix_entropy_profile,
    validate_tokens,
)
from .plots import entropy_cliff_figure, plot_entropy_cliff, plot_schedules, schedules_figure
from .probe import equal_capacity_k, first_k_linear_probe
from .report import cliff_report, format_table
from .theory import advise, prop1_bound, table1, table1_thresholds, table2, uniform_transition_position

__all__ = [
    "DEFAULT_TOLERANCE_BITS",
    "EntropyProfile",
    "advise",
    "cliff_report",
    "codebook_usage",
    "codebook_utilisation",
    "conditional_entropy",
    "entropy_cliff_figure",
    "equal_capacity_k",
    "first_k_linear_probe",
    "format_table",
    "measured_transition_position",
    "plot_entropy_cliff",
    "plot_schedules",
    "prefix_entropy",
    "prefix_entropy_profile",
    "prop1_bound",
    "schedules_figure",
    "table1",
    "table1_thresholds",
    "table2",
    "uniform_transition_position",
    "validate_tokens",
]
