"""The embedded default model's short name (kept free of heavy imports)."""

EMBEDDED_MODEL_NAME = "tiny-pydoc-gpt2"


def is_embedded_model(name: str) -> bool:
    """True if ``name`` names the embedded default model (``"tiny-pydoc-gpt2"``)."""
    return isinstance(name, str) and name.strip() == EMBEDDED_MODEL_NAME
