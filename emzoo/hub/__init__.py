"""Pretrained weights: the manifest, Hub downloads with sha256 checks, the offline cache and mirrors, presets.

``manifest`` (published releases) -> ``download`` (fetch, verify, cache) -> ``load`` (``resolve(address) -> files``,
then build + load weights); ``save`` writes a preset (``layout`` file names, ``card`` model card); ``compact`` is the
int8 weights encoding; ``presets`` re-exports ``save_preset``, ``load``, ``read_preset_metadata`` and ``resolve``.
"""
