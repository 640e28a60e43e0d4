"""Merge by image: identical decoded pixels (any encoding or mode) become one multi-turn row."""

from cauldron.merge import image_key, merge_by_image

from .conftest import encode, make_photo


def turn(text):
    return {"user": f"Q {text}", "assistant": f"A {text}", "source": "test"}


def test_rows_with_the_same_pixels_are_merged_in_order():
    photo, other = make_photo(10), make_photo(11)
    png, bmp, rgba = encode(photo), encode(photo, "BMP"), encode(photo.convert("RGBA"))
    rows = [
        {"images": [png], "texts": [turn(1)]},
        {"images": [encode(other)], "texts": [turn(2)]},
        {"images": [bmp], "texts": [turn(3), turn(4)]},
        {"images": [], "texts": [turn(5)]},
        {"images": [rgba], "texts": [turn(6)]},
        {"images": [], "texts": [turn(5)]},
    ]
    result = merge_by_image(rows)
    assert result.sources == [[0, 2, 4], [1], [3], [5]]
    assert result.rows[0] == {"images": [png], "texts": [turn(1), turn(3), turn(4), turn(6)]}
    assert result.rows[1]["texts"] == [turn(2)]
    assert [row["texts"] for row in result.rows[2:]] == [[turn(5)], [turn(5)]]  # text-only rows never merge
    assert result.errors == []


def test_image_order_and_count_matter_for_multi_image_rows():
    a, b = encode(make_photo(12)), encode(make_photo(13))
    rows = [
        {"images": [a, b], "texts": [turn(1)]},
        {"images": [b, a], "texts": [turn(2)]},
        {"images": [a], "texts": [turn(3)]},
        {"images": [encode(make_photo(12), "BMP"), b], "texts": [turn(4)]},
    ]
    assert merge_by_image(rows).sources == [[0, 3], [1], [2]]


def test_a_lossy_copy_is_not_the_same_image():
    photo = make_photo(14)
    assert image_key({"images": [encode(photo)], "texts": []}) != image_key(
        {"images": [encode(photo, "JPEG", quality=95)], "texts": []})


def test_undecodable_rows_are_reported_not_fatal():
    rows = [{"images": [b"garbage"], "texts": [turn(1)]}, {"images": [encode(make_photo(15))], "texts": [turn(2)]}]
    result = merge_by_image(rows)
    assert [position for position, _ in result.errors] == [0]
    assert result.sources == [[1]]
