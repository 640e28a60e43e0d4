"""Ray Data wiring for the curation and cauldron stages, and the `curate` command line."""
