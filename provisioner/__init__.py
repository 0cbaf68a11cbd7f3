"""rigctl: declarative multi-GPU LLM inference rigs (validate, plan, apply, verify)."""

__version__ = "0.1.0"
