"""Model architectures, MONAI-style bundles and training for myonode's pipelines."""

from pathlib import Path

# The committed demo bundles (trained on phantoms by `train_demo_bundles`).
BUNDLES_DIR = Path(__file__).parent / "bundles"
