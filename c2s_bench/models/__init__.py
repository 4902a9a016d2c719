"""Research networks and objectives, not shipped: ``volumetric`` (the 3-D candidate inflated from the 2.5-D
network) and ``peers`` (the self-supervised peers' losses, trained by the product's one training loop's steps)."""
