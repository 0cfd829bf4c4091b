"""One module per published SAE file format: how to read its config and weights.

`sae_lens.toolkit.pretrained_sae_loaders` is the public facade that wires these to the
registry and the Hugging Face hub.
"""
