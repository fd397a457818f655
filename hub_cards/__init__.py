"""Jinja2 templates for dataset and model cards (installed as ``symgen_datasets.hub_cards``)."""
