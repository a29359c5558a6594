"""The RGB-D belt simulator: products, damage, rendering, dataset and recording writers."""
