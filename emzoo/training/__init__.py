"""Training and fine-tuning: losses, optimisers, recipes, sampling, augmentation, K-fold and transfer.

The only part of emzoo that compiles models. Public entry points: :func:`finetune` and :func:`kfold` (re-exported
as ``emzoo.finetune`` and ``emzoo.kfold``), :func:`replace_head`, :func:`freeze_encoder` and
:func:`binary_to_multiclass` for transfer, the named recipes in :data:`RECIPES`, and :class:`TrainConfig` (a run's
configuration, resolved once and stored in its checkpoints).

Layout, bottom up: ``splits`` (numpy-only slab splits), ``heads`` (graph surgery), ``data``, ``losses``,
``optimizers``, ``sampling``, ``augment``, ``recipes``, ``evaluate``, ``precision`` (the bfloat16 kernel check);
then ``config``, ``checkpoint``, ``validation``; then ``finetune`` (the orchestrator); then ``folds``
(cross-validation) and ``transfer`` (multi-stage pipelines), which call :func:`finetune`.
"""

from emzoo.training.augment import Augment
from emzoo.training.config import TrainConfig
from emzoo.training.finetune import finetune
from emzoo.training.folds import KFoldResult, holdout_split, kfold, slab_folds
from emzoo.training.recipes import RECIPES, Recipe, default_recipe, get_recipe
from emzoo.training.transfer import binary_to_multiclass, freeze_encoder, replace_head

__all__ = [
    "finetune",
    "kfold",
    "KFoldResult",
    "slab_folds",
    "holdout_split",
    "replace_head",
    "freeze_encoder",
    "binary_to_multiclass",
    "Augment",
    "TrainConfig",
    "Recipe",
    "RECIPES",
    "get_recipe",
    "default_recipe",
]
