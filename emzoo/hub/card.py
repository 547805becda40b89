"""The preset's ``README.md``: a Hugging Face model card (:class:`huggingface_hub.ModelCard`) built from ``emzoo.json``.

The front matter (library, licence, tags, datasets, ``model-index`` results) is a
:class:`huggingface_hub.ModelCardData`, so the Hub shows the metrics; the body opens with the ``emzoo.load`` line
that loads the preset (``library_name`` is ``emzoo``: Keras' own ``load_model`` cannot, since a preset holds weights
and build arguments, not a serialised model) and continues with a stats table a reader can check against
``emzoo.json``.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["model_card"]

_TEMPLATE = "---\n{{ card_data }}\n---\n\n{{ body }}"


def _shape(shape: Any) -> str:
    return "x".join("?" if s is None else str(s) for s in shape)


def _card_data(meta: dict[str, Any]) -> Any:
    from huggingface_hub import EvalResult, ModelCardData

    metrics = meta.get("metrics") or {}
    data = meta.get("training_data") or {}
    datasets = list(meta.get("datasets") or ([data["name"]] if data.get("name") else []))
    results = [
        EvalResult(task_type="image-segmentation", dataset_type=(datasets or ["custom"])[0],
                   dataset_name=data.get("name") or (datasets or ["custom"])[0], dataset_split=metrics["test_split"],
                   metric_type=key, metric_value=value)
        for key, value in metrics.get("values", {}).items()
    ]
    return ModelCardData(
        # What loads the repo: a preset is rebuilt by emzoo's builder, not by keras.saving.load_model, so "keras"
        # (whose Hub snippet is load_model("hf://...")) would advertise a line that fails; an unlisted library shows
        # no snippet, and the card's own first code block gives the emzoo.load line. "keras" stays a tag.
        library_name="emzoo",
        license=meta.get("license"),
        tags=["emzoo", "keras", "image-segmentation", "electron-microscopy", meta["entry"],
              *(meta.get("tags") or [])],
        datasets=datasets or None,
        pipeline_tag="image-segmentation",
        model_name=(meta.get("name") or meta["entry"]) if results else None,
        eval_results=results or None,
    )


def _load_address(meta: dict[str, Any]) -> str:
    """The shortest ``emzoo.load`` argument for this preset: its ``entry.tag`` name, else a folder placeholder."""
    name = str(meta.get("name") or "")
    if name.startswith(f"{meta['entry']}.") and " " not in name:
        return name
    return "path/to/this/folder"


def _postprocess_text(spec: dict[str, Any] | None) -> str:
    if not spec:
        return "none"
    return (f"predicted objects longer than {spec['remove_longer_than']:.0f} px (per {spec.get('per', 'slice')}) "
            f"are removed: {spec.get('margin', 1.5):g} x the longest of {spec.get('objects', '?')} labelled training "
            f"objects ({spec['longest_training_object']:.0f} px); the metrics include it, "
            "`emzoo.predict(..., postprocess=False)` turns it off")


def _stats(meta: dict[str, Any]) -> list[tuple[str, str]]:
    flops = meta.get("flops") or {}
    inp = meta["input"]
    data = meta.get("training_data") or {}
    return [
        ("entry", f"`{meta['entry']}` (`emzoo.build({meta['entry']!r}, **build_kwargs)`, see config.json)"),
        ("params", f"{meta['params']:,}"),
        ("GFLOPs", f"{flops['gflops']:.4g} at input {_shape(flops['input_shape'])}" if flops else "not counted"),
        ("input", f"{meta['axes']} {_shape(inp['shape'])} {inp['dtype']}"
                  + (f", spatial sides divisible by {_shape(inp['divisor'])}" if inp.get("divisor") else "")),
        ("classes", f"{meta['num_classes']} ({', '.join(meta['classes']) if meta.get('classes') else 'unnamed'})"),
        ("normalization", f"`{json.dumps(meta.get('normalization'))}`"),
        ("receptive field / halo", f"{meta.get('receptive_field')} / {meta.get('halo')}"),
        ("valid TTA", ", ".join(meta.get("tta") or []) or "-"),
        ("post-processing", _postprocess_text(meta.get("postprocess"))),
        ("trained on", f"{data.get('name', '-')}" + (f" (sha256 `{data['sha256']}`)" if data.get("sha256") else "")),
        ("seed", str(meta.get("seed"))),
    ]


def model_card(meta: dict[str, Any], config: dict[str, Any]) -> str:
    """The model card text of a preset with metadata ``meta`` (``emzoo.json``) and ``config`` (``config.json``).

    Parameters
    ----------
    meta : dict
        The preset's ``emzoo.json`` content (needs ``entry``, ``input``, ``params``, ``axes``, ``num_classes``,
        ``date``; ``metrics`` become ``model-index`` results).
    config : dict
        The preset's ``config.json`` content (for the versions it was written with).

    Returns
    -------
    str
        Markdown with YAML front matter, ready for ``README.md``.
    """
    from huggingface_hub import ModelCard

    name = meta.get("name") or meta["entry"]
    metrics = meta.get("metrics") or {}
    lines = [
        f"# {name}", "",
        meta.get("description") or f"emzoo preset of `{meta['entry']}` (Keras 3).", "",
        "```python", "# pip install emzoo", "import emzoo", "", f"model = emzoo.load({json.dumps(_load_address(meta))})",
        "# or emzoo.load(\"hf://<this repo>@<revision>\"), or emzoo.load(\"path/to/this/folder\")",
        "```", "",
        "## Stats", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in _stats(meta)), "",
    ]
    cover = meta.get("cover") or {}
    if cover.get("file"):
        # A relative link: the picture travels in the same folder (Hub repo, bioimage.io package).
        lines[4:4] = [f"![{cover.get('caption', 'prediction')}]({cover['file']})", "",
                      f"*{cover.get('caption', '')}*", ""]
    if metrics:
        lines += [f"## Metrics (test split: {metrics['test_split']})", "", "| metric | value |", "|---|---|",
                  *(f"| {k} | {v:.4f} |" for k, v in metrics["values"].items()), ""]
    if meta.get("recipe"):
        lines += ["## Training recipe", "", "```json", json.dumps(meta["recipe"], indent=1), "```", ""]
    lines += ["## Files", "", "- `config.json`: entry and build kwargs (rebuilt with emzoo's builder, no pickles)",
              "- `model.weights.h5`: Keras 3 weights", "- `emzoo.json`: axes, input, normalisation, metrics, versions",
              *([f"- `{cover['file']}`: the picture above (emzoo.viz.cover_image)"] if cover.get("file") else []),
              "", f"Written {meta['date']} with emzoo {config['emzoo_version']}, Keras {config['keras_version']}.", ""]
    card = ModelCard.from_template(_card_data(meta), template_str=_TEMPLATE, body="\n".join(lines))
    return str(card)
