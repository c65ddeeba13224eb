"""dlcourse: a PyTorch training framework in which every experiment is a Hydra YAML config."""

__version__ = "0.1.0"
