"""The compact Idefics2 trainer: model, processor, shard data loading, loop, checkpoints, export."""
