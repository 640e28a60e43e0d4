"""Eval sets on object storage: an s3:// parquet eval set (images stored as paths next to it), an s3:// image
folder and an s3:// `save_to_disk` folder index the same items as their local copies."""

import datasets

from cauldron.dedup import build_eval_index
from tests.cauldron.conftest import encode, make_photo
from tests.cauldron.test_dedup import write_eval_parquet_with_paths
from tests.storage.runs import upload_tree


def test_s3_eval_sets_index_what_local_ones_do(bucket, tmp_path):
    write_eval_parquet_with_paths(tmp_path / "evals" / "quiz", make_photo(3))
    (tmp_path / "evals" / "folder" / "sub").mkdir(parents=True)
    (tmp_path / "evals" / "folder" / "sub" / "a.jpg").write_bytes(encode(make_photo(5), "JPEG"))
    features = datasets.Features({"image": datasets.Image(), "question": datasets.Value("string")})
    split = {"image": [{"bytes": encode(make_photo(6)), "path": None}], "question": ["How many of the seven red marbles remain?"]}
    datasets.DatasetDict({"validation": datasets.Dataset.from_dict(split, features=features)}).save_to_disk(tmp_path / "evals" / "hf")
    upload_tree(tmp_path / "evals", bucket / "evals")
    names = ("quiz", "folder", "hf")
    local = build_eval_index({name: tmp_path / "evals" / name for name in names})
    remote = build_eval_index({name: bucket / "evals" / name for name in names})
    assert remote.image_count == local.image_count == 3 and remote.gram_count == local.gram_count > 0
    assert [item for _, item, _ in remote.skipped] == [item for _, item, _ in local.skipped] == ["test.parquet#1/image"]
    assert remote.digest() == local.digest()
    single = build_eval_index({"quiz": bucket / "evals" / "quiz" / "test.parquet"})
    assert single.image_count == 1
