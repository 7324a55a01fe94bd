"""Entropy-cliff analysis: theory (Eq. 1/2, Prop. 1, Tables 1/2), measured entropy, probe, plots."""
