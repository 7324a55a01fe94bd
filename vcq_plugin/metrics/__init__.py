"""Metrics: gFID / IS / precision / recall / KID (ADM protocol, torch-fidelity), rFID, PSNR, LPIPS.

Nothing downloads: Inception / VGG16 weights come from an argument, an environment variable
(``VCQ_INCEPTION_WEIGHTS``, ``VCQ_VGG16_WEIGHTS``) or the torch hub cache. Exports are lazy so
that ``import vcq_plugin.metrics`` (and the ``vcq`` command) stays cheap.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "GENERATION_METRICS": "fidelity", "build_extractor": "fidelity", "compute_generation_metrics": "fidelity",
    "RECON_METRICS": "recon", "build_lpips": "recon", "compute_reconstruction_metrics": "recon", "psnr": "recon",
    "load_images": "reference", "load_reference_stats": "reference", "open_images": "reference",
    "ADM_IMAGE_SIZE": "samples", "ADM_NUM_SAMPLES": "samples", "AdmSampleWriter": "samples",
    "check_sample_count": "samples", "to_uint8_nhwc": "samples", "write_adm_npz": "samples",
    "MissingWeightsError": "weights", "resolve_inception_weights": "weights", "resolve_vgg16_weights": "weights",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
