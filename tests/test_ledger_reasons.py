"""Every ledger reason the code can name is explained in docs/formats.md."""

from tests.ledger_reasons import reasons_in_code, undocumented


def test_the_scan_sees_the_rejections():
    found = reasons_in_code()
    assert {"malformed", "too_many_pixels", "duplicate_key", "private_address"} <= set(found)
    assert len(found) > 40


def test_every_reason_in_the_code_is_documented():
    found = reasons_in_code()
    missing = {reason: sorted(found[reason]) for reason in undocumented(found)}
    assert not missing, f"ledger reasons missing from docs/formats.md: {missing}"
