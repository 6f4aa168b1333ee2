"""Training: the SyncNet expert, the Wav2Lip generator (plain or GAN) and distilled students, one loop."""
from . import expert, generator  # noqa: F401  (each recipe module registers its recipe with the loop)
from .config import TrainConfig, make_config, read_config_file
from .distill import default_checkpoint_dir, distill
from .loop import checkpoint_path, evaluate, latest_checkpoint, train

__all__ = ["TrainConfig", "checkpoint_path", "default_checkpoint_dir", "distill", "evaluate", "latest_checkpoint",
           "make_config", "read_config_file", "train"]
