"""symgen-datasets: verified, versioned synthetic datasets for symbolic languages.

Implements SymGen (Ye et al., EMNLP 2023): informative prompts make an LLM write questions and
candidate programs; an agreement-based verifier keeps the questions whose candidates agree on
their execution result.
"""

__version__ = "0.1.0"
