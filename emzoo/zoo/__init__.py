"""The zoo's published presets: declarative cards (:mod:`emzoo.zoo.cards`) and the command that trains, scores,
encodes and records each one (:func:`train_zoo`)."""

from emzoo.zoo.cards import CARDS, SplitSpec, ZooCard, get_card, list_cards
from emzoo.zoo.train import train_zoo

__all__ = ["CARDS", "SplitSpec", "ZooCard", "get_card", "list_cards", "train_zoo"]
