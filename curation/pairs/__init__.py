"""Image-text pairs with a high-recall NSFW filter (the `curate pairs` library half; no Ray here).

Flow for one input partition, as the pipeline runs it:
1. Read: `download.download_pairs` + `download.iter_staged_pairs` (URL lists, via img2dataset), or
   `sources.iter_parquet_pairs` / `sources.iter_webdataset_pairs` (pairs with image bytes). Each yields
   `pair.Pair` or a `curation.errors.Rejection` naming the row, one per input row.
2. Score: `nsfw.score_pairs` (CLIP embeddings + NSFW head; `nsfw.ClipNsfwClassifier.load`) or
   `nsfw.column_scores` (`--nsfw-source column`, the input's `punsafe`).
3. Select over all partitions' scores: `nsfw.select_nsfw` (`--drop-top-nsfw`, `--nsfw-threshold`);
   `calibration.calibrate` finds a threshold for a target recall on a labelled sample.
4. Write: `samples.pair_sample` per kept pair into `curation.shards.PartitionShardWriter`;
   `sidecars.SidecarWriter` streams the score sidecar and the optional embeddings sidecar.
Heads: `nsfw_convert` turns the released LAION heads into safetensors; `nsfw_head.load_head` loads them.
"""
