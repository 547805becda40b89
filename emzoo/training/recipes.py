"""Named training recipes: the loss, optimiser, sampling, patch and augmentation defaults of each source paper.

One frozen :class:`Recipe` per source (``TRAINING.md``); :func:`finetune` fills every argument the caller leaves out
from it. Values the papers leave open are marked in each recipe's ``notes`` (``UNVERIFIED`` in the spec).

========================  ==================================================================================
recipe                    source
========================  ==================================================================================
``emnet``                 EM-net notebook / EM-stellar (§1): BCE, RAdam 1e-3 with 10 % warm-up to 1e-5, batch 2
``cdeep3m``               CDeep3M (§3): class-balanced softmax CE, SGD 0.9 + poly(0.8), 5 × 8 patches of 320²
``highres3d``             Žerovnik Mekuč et al. (§4): masked multi-class Dice, Adam 1e-4, class-balanced windows
``net2d3d``               Guay et al. (§5): weighted CE on both outputs (3D + 0.33 × 2D), Adam 1e-3, 5×300² windows
``franco_barranco``       Franco-Barranco et al. (§6): BCE, SGD 0.002 momentum 0.99, batch 6, 256² (80³ in 3D)
``emzoo``                 emzoo's short-run default for 2D entries: BCE + soft Dice, RAdam 1e-3 with warm-up,
                          foreground-biased windows when the foreground is sparse, batch 4, 256²
========================  ==================================================================================

The papers' recipes are long-schedule recipes (20,000+ steps). A fine-tune of a few hundred steps on a sparse
target with them learns "background everywhere" (Franco-Barranco's SGD 0.002 / 0.99 on cdeep3m_mito: F1 0.0003
after 600 steps), so 2D entries default to ``emzoo``; every paper recipe stays available by name.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from emzoo.training.augment import Augment

__all__ = ["Recipe", "RECIPES", "get_recipe", "default_recipe", "FAMILY_RECIPES", "SHORT_RECIPE"]


@dataclass(frozen=True)
class Recipe:
    """Training defaults of one source.

    Attributes
    ----------
    name : str
        Recipe name.
    loss : str
        Loss name of :data:`emzoo.training.losses.LOSSES`.
    loss_options : tuple of (str, value)
        Keyword options of the loss.
    weighted : bool
        The loss reads a per-pixel weight/mask map (packed after the labels).
    output_loss_weights : tuple of float
        Loss weight of each model output, main output first (net2d3d: 1 and 0.33).
    optimizer : {"radam", "sgd", "adam"}
        Optimiser name of :func:`emzoo.training.optimizers.make_optimizer`.
    learning_rate : float
        Base or peak learning rate.
    schedule : {None, "warmup_linear", "poly"}
        Learning-rate schedule over the run.
    optimizer_options : tuple of (str, value)
        Further optimiser arguments (momentum, betas, weight decay, gradient accumulation).
    batch_size : int
        Patches per step.
    patch_size : tuple of int
        In-plane ``(Y, X)`` for 2D models, ``(Z, Y, X)`` for 3D ones (the model's input window; a 3D->2D model's
        frame count comes from the model).
    sampler : {"auto", "uniform", "foreground", "cdeep3m", "class_balanced"}
        Window sampler of :mod:`emzoo.training.sampling`; ``"auto"`` chooses from the label statistics
        (:func:`~emzoo.training.sampling.choose_sampler`).
    sampler_options : tuple of (str, value)
        Sampler arguments.
    augment : Augment
        On-the-fly augmentation.
    normalization : str
        Method of :func:`emzoo.io.normalize.fit_normalization` fitted on the training data.
    steps : int
        Default number of steps when neither ``steps`` nor ``epochs`` is given.
    notes : str
        Deviations from the source and open values.
    """

    name: str
    loss: str
    optimizer: str
    learning_rate: float
    batch_size: int
    patch_size: tuple[int, ...]
    loss_options: tuple[tuple[str, Any], ...] = ()
    weighted: bool = False
    output_loss_weights: tuple[float, ...] = (1.0,)
    schedule: str | None = None
    optimizer_options: tuple[tuple[str, Any], ...] = ()
    sampler: str = "uniform"
    sampler_options: tuple[tuple[str, Any], ...] = ()
    augment: Augment = field(default_factory=Augment)
    normalization: str = "zscore"
    steps: int = 20_000
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The recipe as a JSON-able dict (stored in the preset's metadata)."""
        out = asdict(self)
        for key in ("loss_options", "optimizer_options", "sampler_options"):
            out[key] = dict(out[key])
        out["patch_size"] = list(self.patch_size)
        return out

    def override(self, **changes: Any) -> Recipe:
        """A copy with some fields changed (unknown fields raise ``TypeError``)."""
        return replace(self, **changes)


def _recipes() -> dict[str, Recipe]:
    emnet = Recipe(
        name="emnet",
        loss="bce",
        optimizer="radam",
        learning_rate=1e-3,
        schedule="warmup_linear",
        optimizer_options=(("warmup_proportion", 0.1), ("min_lr", 1e-5)),
        batch_size=2,
        patch_size=(256, 256),
        sampler="uniform",
        # Keras ImageDataGenerator in the notebook: rotation 140°, zoom 0.2 (independent x/y), flips, reflect fill;
        # shifts are implicit in random crops, the 0.2-degree shear is negligible and dropped.
        augment=Augment(flip=True, rot90=False, rotation=140.0, zoom=0.2, zoom_independent=True),
        normalization="zscore",
        steps=20_000,
        notes="EM-net notebook: RAdam lr 1e-3, warm-up 10 % of the run, linear decay to 1e-5 (the notebook fixes "
              "20,000 steps; here the schedule spans the run). Random crops instead of fixed non-overlapping tiles; "
              "global z-score fitted on the training data and reused at test (bug 3 fixed); validation is not "
              "augmented (bug 2 fixed).",
    )
    cdeep3m = Recipe(
        name="cdeep3m",
        loss="balanced_ce",
        optimizer="sgd",
        learning_rate=1e-2,
        schedule="poly",
        optimizer_options=(("momentum", 0.9), ("poly_power", 0.8), ("weight_decay", 5e-4),
                           ("gradient_accumulation_steps", 8)),
        batch_size=5,
        patch_size=(320, 320),
        sampler="cdeep3m",
        sampler_options=(("background_acceptance", 0.25),),
        # The 16 materialised variants = the dihedral group in (y, x) x z reversal, drawn on the fly.
        augment=Augment(flip=True, rot90=True, flip_z=True),
        normalization="minmax",
        steps=30_000 * 8,
        notes="Caffe: 5 patches x iter_size 8 = 40 per update (gradient_accumulation_steps=8; steps count batches, "
              "so the default 240,000 batches = 30,000 updates). Weight decay is Keras' decoupled form, not Caffe's "
              "L2-in-the-gradient; the bias lr x2 multiplier is dropped. Images scaled to [0, 1] (UNVERIFIED).",
    )
    highres3d = Recipe(
        name="highres3d",
        loss="masked_dice",
        loss_options=(("variant", "mekuc"),),
        weighted=True,
        optimizer="adam",
        learning_rate=1e-4,
        optimizer_options=(("weight_decay", 1e-4),),
        batch_size=1,
        patch_size=(64, 64, 64),
        sampler="class_balanced",
        sampler_options=(("class_probabilities", (0.2, 0.4, 0.4)),),
        augment=Augment(flip=True, rot90=False, flip_z=True, elastic=4.0, zoom=0.1, zoom_independent=False,
                        zoom_z=True),
        normalization="minmax",
        steps=20_000,
        notes="Optimiser, learning rate and window size are UNVERIFIED (NiftyNet defaults: Adam, 1e-4). Class "
              "window probabilities 0.2/0.4/0.4 (binary stage: 0.2/0.8). Elastic deformation is in-plane and "
              "identical on every z slice (V-Net style 3D fields are not reproduced).",
    )
    net2d3d = Recipe(
        name="net2d3d",
        loss="weighted_ce",
        loss_options=(("floor", 0.01), ("reduction", "mean")),
        weighted=True,
        output_loss_weights=(1.0, 0.33),
        optimizer="adam",
        learning_rate=1e-3,
        optimizer_options=(("beta_1", 1 - 10**-1.5), ("beta_2", 1 - 10**-2.1), ("epsilon", 1e-7)),
        batch_size=1,
        patch_size=(5, 304, 304),
        sampler="uniform",
        augment=Augment(flip=True, rot90=False, elastic=4.0, brightness=0.12, contrast=0.2),
        normalization="minmax",
        steps=40_000,
        notes="Loss = mean (not sum) of (W + 0.01)-weighted CE of pred3d + 0.33 x pred2d: same optimum, learning "
              "rate independent of the window size. Window 5x304x304 (a multiple of 8, so output = input) instead "
              "of 5x300x300. Elastic deformation drawn per window (the paper: one field per epoch). In-plane flips "
              "are an enabled deviation (a no-op in the original code).",
    )
    franco = Recipe(
        name="franco_barranco",
        loss="bce",
        optimizer="sgd",
        learning_rate=0.002,
        optimizer_options=(("momentum", 0.99),),
        batch_size=6,
        patch_size=(256, 256),
        sampler="uniform",
        augment=Augment(flip=True, rot90=True, rotation=180.0),
        normalization="minmax",
        steps=20_000,
        notes="Best configuration of the paper (BCE, SGD 0.002 / 0.99, batch 6). 3D nets: 80^3 windows plus "
              "elastic deformation. Rotation: arbitrary angles in [-180, 180] (UNVERIFIED whether the final runs "
              "used multiples of 90). Early stopping (patience 100 epochs) is replaced by keeping the best "
              "validation checkpoint.",
    )
    short = Recipe(
        name="emzoo",
        loss="bce_dice",
        optimizer="radam",
        learning_rate=1e-3,
        schedule="warmup_linear",
        optimizer_options=(("warmup_proportion", 0.1), ("min_lr", 1e-5)),
        batch_size=4,
        patch_size=(256, 256),
        sampler="auto",
        augment=Augment(flip=True, rot90=True, brightness=0.1, contrast=0.2),
        normalization="zscore",
        steps=1000,
        notes="emzoo's default for short fine-tunes (hundreds to a few thousand steps), chosen by measurement on "
              "cdeep3m_mito (8.8 % foreground) and cardiac_mito (38 %): see the README's fine-tuning section. "
              "sampler='auto' centres a third of the windows on foreground when fewer than half of uniform windows "
              "hold >= 1 % foreground (emzoo.training.sampling.choose_sampler). "
              "Brightness/contrast jitter covers the slab-to-slab intensity drift of real stacks.",
    )
    return {r.name: r for r in (emnet, cdeep3m, highres3d, net2d3d, franco, short)}


RECIPES: dict[str, Recipe] = _recipes()

# The default of every 2D entry (single-frame input): the papers' recipes are long-schedule ones.
SHORT_RECIPE = "emzoo"

# family of the registry -> its paper's recipe (the default of 3D and multi-frame entries)
FAMILY_RECIPES: dict[str, str] = {
    "emnet": "emnet",
    "unet": "emnet",
    "segnet": "emnet",
    "resnet_unet": "emnet",
    "vgg_unet": "emnet",
    "cdeep3m": "cdeep3m",
    "highres3dnet": "highres3d",
    "net2d3d": "net2d3d",
    "stable_unet": "franco_barranco",
}


def get_recipe(recipe: str | Recipe) -> Recipe:
    """The :class:`Recipe` called ``recipe`` (a Recipe is returned unchanged).

    Examples
    --------
    >>> get_recipe("emnet").optimizer
    'radam'
    """
    if isinstance(recipe, Recipe):
        return recipe
    if recipe not in RECIPES:
        close = difflib.get_close_matches(str(recipe), list(RECIPES), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown recipe {recipe!r}.{hint} Choose one of {sorted(RECIPES)}.")
    return RECIPES[recipe]


def default_recipe(entry: str | None, *, dims: str = "2D") -> Recipe:
    """The recipe an entry is trained with by default: ``emzoo`` for 2D entries, the family's paper recipe for
    multi-frame and 3D ones (``highres3d`` for a 3D entry of no listed family).

    3D recipes get 3D patch sizes: a 3D entry of a 2D-recipe family (the Franco-Barranco 3D U-Nets) gets 80³
    windows and elastic deformation, as in the paper.

    Examples
    --------
    >>> default_recipe("unet_bn").name
    'emzoo'
    >>> default_recipe("unet3d_fb").patch_size
    (80, 80, 80)
    """
    family = None
    if entry is not None:
        from emzoo.registry import get_entry

        try:
            meta = get_entry(entry).info
        except KeyError:
            meta = None
        if meta is not None:
            family, dims = meta.family, meta.dims
    if dims == "2D":
        return RECIPES[SHORT_RECIPE]
    name = FAMILY_RECIPES.get(family or "", "highres3d")
    recipe = RECIPES[name]
    if dims == "3D" and len(recipe.patch_size) == 2:
        aug = replace(recipe.augment, flip_z=True, elastic=max(recipe.augment.elastic, 4.0))
        recipe = replace(recipe, patch_size=(80, 80, 80), augment=aug)
    return recipe
