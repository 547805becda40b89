"""Pretrained weights: the manifest, Hub downloads with sha256 checks, the offline cache and mirrors, presets."""
