"""Cauldron parquet loads with `datasets` and has exactly the_cauldron's features."""

import datasets
import pyarrow.parquet as pq

from cauldron.schema import CAULDRON_FEATURES, read_cauldron_parquet, write_cauldron_parquet

from .conftest import encode, make_photo

# The feature declaration from the_cauldron's dataset card (every config declares the same).
THE_CAULDRON_CARD_FEATURES = [
    {"name": "images", "sequence": "image"},
    {
        "name": "texts",
        "list": [
            {"name": "user", "dtype": "string"},
            {"name": "assistant", "dtype": "string"},
            {"name": "source", "dtype": "string"},
        ],
    },
]


def rows():
    first, second = encode(make_photo(1)), encode(make_photo(2), "JPEG", quality=90)
    return [
        {
            "images": [first],
            "texts": [{"user": "Q1", "assistant": "A1.", "source": "vqav2"}, {"user": "Q2", "assistant": "A2.", "source": "vqav2"}],
        },
        {"images": [first, second], "texts": [{"user": "Same?", "assistant": "No.", "source": "nlvr2"}]},
        {"images": [], "texts": [{"user": "Hi", "assistant": "Hello", "source": "openhermes"}]},
    ]


def test_features_equal_the_cauldron_card():
    expected = datasets.Features._from_yaml_list(THE_CAULDRON_CARD_FEATURES)
    built_by_hand = datasets.Features(
        {
            "images": datasets.Sequence(datasets.Image()),
            "texts": datasets.List({name: datasets.Value("string") for name in ("user", "assistant", "source")}),
        }
    )
    assert CAULDRON_FEATURES == expected == built_by_hand


def test_parquet_loads_with_datasets(tmp_path):
    path = write_cauldron_parquet(rows(), tmp_path / "vqav2" / "train-00000.parquet")
    assert not list(tmp_path.rglob("*.partial"))
    loaded = datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.features == datasets.Features._from_yaml_list(THE_CAULDRON_CARD_FEATURES)
    assert loaded.num_rows == 3
    first = loaded[0]
    assert first["images"][0].size == (128, 96)  # decoded as PIL images
    assert first["texts"][1] == {"user": "Q2", "assistant": "A2.", "source": "vqav2"}
    assert [len(row["images"]) for row in loaded] == [1, 2, 0]


def test_round_trip_keeps_encoded_bytes(tmp_path):
    path = write_cauldron_parquet(rows(), tmp_path / "out.parquet")
    assert list(read_cauldron_parquet(path)) == rows()


def test_reads_parquet_without_feature_metadata(tmp_path):
    # the_cauldron files written by other tools: same arrow layout, possibly no `huggingface` metadata
    path = write_cauldron_parquet(rows(), tmp_path / "out.parquet")
    table = pq.read_table(path).replace_schema_metadata(None)
    bare = tmp_path / "bare.parquet"
    pq.write_table(table, bare)
    assert list(read_cauldron_parquet(bare)) == rows()
