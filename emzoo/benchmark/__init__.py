"""The benchmark harness: score any zoo entry, preset or ensemble on the user's data and print a leaderboard."""

from emzoo.benchmark.data import Dataset, Split, demo_dataset_path, load_dataset
from emzoo.benchmark.harness import METRIC_COLUMNS, ModelSpec, benchmark, parse_model_spec
from emzoo.benchmark.report import to_markdown, write_outputs

__all__ = [
    "METRIC_COLUMNS",
    "Dataset",
    "ModelSpec",
    "Split",
    "benchmark",
    "demo_dataset_path",
    "load_dataset",
    "parse_model_spec",
    "to_markdown",
    "write_outputs",
]
