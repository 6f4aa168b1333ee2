"""Training: the SyncNet expert and the Wav2Lip generator (plain or GAN), one loop for both."""
from .config import TrainConfig, make_config, read_config_file
from .loop import checkpoint_path, evaluate, latest_checkpoint, train

__all__ = ["TrainConfig", "checkpoint_path", "evaluate", "latest_checkpoint", "make_config",
           "read_config_file", "train"]
