"""The dataset card: README.md with the Hub's YAML metadata, statistics, provenance and usage."""

from groundcap.dataset_card.card import render, size_category, validate_card, write_card

__all__ = ["render", "size_category", "validate_card", "write_card"]
