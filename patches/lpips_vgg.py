"""Scoped patch for the ``lpips`` package (PyPI lpips 0.1.4): build LPIPS-VGG without any download.

``lpips.pretrained_networks.vgg16`` builds its trunk as ``tv.vgg16(pretrained=...).features``, with
``tv`` = ``torchvision.models``. Inside :func:`vgg16_trunk_only`, ``tv`` is a namespace whose
``vgg16()`` builds torchvision's VGG16 ``features`` only (randomly initialised, without the
100M-parameter classifier lpips throws away) and refuses ``pretrained=True``: the caller loads the
trunk's weights from a local file. The hook is drift-checked against ``vgg16``'s source, undone
when the ``with`` block ends, and by :func:`vcq_plugin.unregister`.
"""
from __future__ import annotations

import contextlib
import types
from typing import Any, Iterator, List

from ._base import Hook

HOST = "lpips"
MODULE = "lpips.pretrained_networks"
PIN = "lpips==0.1.4"
HOW_TO_FIX = "install the pinned version (pip install lpips==0.1.4)"
# source_sha256(lpips.pretrained_networks.vgg16) at lpips 0.1.4: the only user of the patched name here
VGG16_SHA256 = "626d689aa67d237501a8d3bdb8cddcf648b90c0264996bb3b78a84c7036c4060"


def _make_tv(original: Any) -> Any:
    from torchvision.models.vgg import cfgs, make_layers

    def vgg16(pretrained: bool = False, **kwargs: Any) -> Any:
        if pretrained:
            raise RuntimeError("vcq_plugin never lets lpips download VGG16 weights")
        return types.SimpleNamespace(features=make_layers(cfgs["D"], batch_norm=False))

    return types.SimpleNamespace(vgg16=vgg16)


def hooks() -> List[Hook]:
    return [Hook(host=HOST, module=MODULE, attribute="tv", checks={"vgg16": VGG16_SHA256}, make=_make_tv,
                 pin=PIN, how_to_fix=HOW_TO_FIX)]


@contextlib.contextmanager
def vgg16_trunk_only(strict: bool = True) -> Iterator[None]:
    """While active, lpips builds VGG16's ``features`` only, randomly initialised, and never downloads."""
    from vcq_plugin.hooks import patched

    with patched(hooks(), strict=strict):
        yield
