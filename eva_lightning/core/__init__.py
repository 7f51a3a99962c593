"""The training core: the LightningModule base, the Trainer, layers, blocks, schedules, checkpoints, errors."""
