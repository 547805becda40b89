"""What the zoo offers: each registry entry together with the weights published for it.

The registry (:mod:`emzoo.registry`) knows the architectures and the hub (:mod:`emzoo.hub.manifest`) knows the
published weights; neither imports the other's side of this join. :func:`info` is where the two meet, so the
registry stays a leaf that every part of emzoo (the hub included) can import.

Examples
--------
>>> from emzoo.catalog import info
>>> info("unet").params
31031685
>>> "cardiac_mito" in info("emnet_v2_4x").weights
True
"""

from __future__ import annotations

import dataclasses

from emzoo.hub.manifest import available_tags
from emzoo.registry import EntryInfo, get_entry

__all__ = ["info"]


def info(name: str) -> EntryInfo:
    """Facts of one entry: reference, input spec, documented params/FLOPs and the published weight tags.

    Parameters
    ----------
    name : str
        Entry name; a ``.tag`` suffix is accepted and ignored.

    Returns
    -------
    EntryInfo
        The registered record with ``weights`` filled from the weights manifest (default tag first).

    Raises
    ------
    KeyError
        If the entry does not exist; the message lists the closest names.

    Examples
    --------
    >>> round(info("unet2d_fb").gflops_at((512, 512)), 1)
    24.1
    """
    facts = get_entry(name).info
    return dataclasses.replace(facts, weights=tuple(available_tags(facts.name)))
