"""DeadLetterStore contract: records that broke their contract, kept byte for byte where no
dead-letter topic exists (embedded mode)."""

from __future__ import annotations

from streams.stores.base import DeadLetterRecord, DeadLetterStore

LETTERS = [
    DeadLetterRecord("file:shop", 17, "$", "not valid JSON: unexpected end", b"{broken"),
    DeadLetterRecord("file:shop", 18, "ts", "expected integer epoch milliseconds, got str", b'{"ts": "now"}'),
    DeadLetterRecord("clicks:3", 17, "$", "not valid JSON: invalid utf-8", b"\xff\xfe\x00 not utf-8"),
    DeadLetterRecord("clicks:3", 20, "$", "expected a JSON object, got bytes", b""),
]


def test_none_at_first(dead_letter_store: DeadLetterStore) -> None:
    assert dead_letter_store.dead_letters() == []
    dead_letter_store.put_dead_letters([])
    assert dead_letter_store.dead_letters() == []


def test_dead_letters_round_trip_byte_for_byte_in_order(dead_letter_store: DeadLetterStore) -> None:
    dead_letter_store.put_dead_letters(LETTERS[:2])
    dead_letter_store.put_dead_letters(LETTERS[2:])
    assert dead_letter_store.dead_letters() == LETTERS


def test_a_replayed_record_is_kept_once(dead_letter_store: DeadLetterStore) -> None:
    """Same source and offset: the same record delivered again (at-least-once), kept once."""
    dead_letter_store.put_dead_letters(LETTERS)
    dead_letter_store.put_dead_letters([LETTERS[1], LETTERS[0]])
    assert dead_letter_store.dead_letters() == LETTERS
