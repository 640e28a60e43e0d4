"""The Cauldron: dataset registry, prompt templates, merge-by-image, eval dedup, mixtures, chat rendering."""
