"""Model architectures, MONAI-style bundles and training for myonode's pipelines."""
