"""Run-time hooks into the host codebases; installed as ``vcq_plugin.patches``."""
