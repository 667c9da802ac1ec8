"""AES-256-GCM tokens: the spec's vectors (section 3) decide byte compatibility with the backend."""

from __future__ import annotations

import base64

import pytest

from rosetta_jobs.crypto import Cipher
from rosetta_jobs.errors import PreviewError

from .conftest import TEST_KEY

NONCE = bytes(range(12))
#: (key, plaintext, token) of the spec's two vectors, both made with nonce 00..0b.
VECTOR_1 = (
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    "s3cr3t-P@ss",
    "AAECAwQFBgcICQoLNDG1afaR70vNMuSrdunvhT3AI4jnVzTVY+Jg",
)
VECTOR_2 = (
    "0123456789abcdef0123456789abcdef",
    "pässwörd ü",
    "AAECAwQFBgcICQoLXSYfD6pvERrauFF9zbFRrH+OVIvkIftQbn8N/ZY=",
)


@pytest.mark.parametrize(("key", "plaintext", "token"), [VECTOR_1, VECTOR_2], ids=["base64-key", "raw-key"])
def test_spec_vectors_decrypt(key: str, plaintext: str, token: str) -> None:
    # Given the key of a spec vector
    cipher = Cipher(key)
    # When its token is decrypted
    result = cipher.decrypt(token)
    # Then the plaintext is the vector's
    assert result == plaintext


@pytest.mark.parametrize(("key", "plaintext", "token"), [VECTOR_1, VECTOR_2], ids=["base64-key", "raw-key"])
def test_spec_vectors_encrypt_with_their_nonce(key: str, plaintext: str, token: str) -> None:
    # Given the key and nonce of a spec vector
    cipher = Cipher(key)
    # When its plaintext is encrypted
    result = cipher.encrypt(plaintext, nonce=NONCE)
    # Then the token is byte for byte the backend's
    assert result == token


def test_tampered_token_fails_with_empty_detail() -> None:
    # Given vector 1 with its last byte (the end of the GCM tag) flipped
    raw = bytearray(base64.b64decode(VECTOR_1[2]))
    raw[-1] ^= 0x01
    tampered = base64.b64encode(bytes(raw)).decode()
    # When it is decrypted
    with pytest.raises(PreviewError) as info:
        Cipher(TEST_KEY).decrypt(tampered)
    # Then the message is the Celery worker's, detail empty
    assert str(info.value) == "Decryption failed: "


def test_plaintext_password_fails_with_base64_detail() -> None:
    # Given a password that was stored unencrypted
    # When it is decrypted
    with pytest.raises(PreviewError) as info:
        Cipher(TEST_KEY).decrypt("plaintextpassword")
    # Then the message carries base64's complaint, as the spec records it
    assert str(info.value) == (
        "Decryption failed: Invalid base64-encoded string: "
        "number of data characters (17) cannot be 1 more than a multiple of 4"
    )


def test_hex_key_is_refused() -> None:
    # Given a 64-character hex key (48 bytes as base64, 64 raw bytes)
    # When a cipher is made with it
    with pytest.raises(ValueError, match="Got 64 bytes") as info:
        Cipher("00" * 32)
    # Then the message says it must match the backend's key
    assert "MUST match the backend's key" in str(info.value)


def test_wrong_key_fails_with_empty_detail() -> None:
    # Given a token made with another key
    token = Cipher("x" * 32).encrypt("secret")
    # When it is decrypted with the test key
    with pytest.raises(PreviewError) as info:
        Cipher(TEST_KEY).decrypt(token)
    # Then decryption fails without revealing anything
    assert str(info.value) == "Decryption failed: "


def test_empty_passes_through_both_ways() -> None:
    # Given a cipher
    cipher = Cipher(TEST_KEY)
    # When empty values are encrypted and decrypted
    # Then they stay empty, as on the backend
    assert cipher.encrypt("") == ""
    assert cipher.decrypt("") == ""


def test_random_nonce_round_trip() -> None:
    # Given a cipher
    cipher = Cipher(TEST_KEY)
    plaintext = "p@ss 'wörd' \\ 🙂"
    # When the same plaintext is encrypted twice
    first, second = cipher.encrypt(plaintext), cipher.encrypt(plaintext)
    # Then the tokens differ (fresh nonce) and both decrypt to it
    assert first != second
    assert base64.b64decode(first)[:12] != base64.b64decode(second)[:12]
    assert cipher.decrypt(first) == cipher.decrypt(second) == plaintext


def test_truncated_token_is_a_preview_error() -> None:
    # Given a token too short to hold a nonce and a tag
    # When it is decrypted
    with pytest.raises(PreviewError, match=r"^Decryption failed: "):
        Cipher(TEST_KEY).decrypt("AAAA")
    # Then it is a PreviewError, not a crash


def test_bad_nonce_length_is_refused() -> None:
    # Given a nonce of the wrong size
    # When it is used
    # Then encrypt refuses it rather than produce a token the backend cannot read
    with pytest.raises(ValueError, match="12 bytes"):
        Cipher(TEST_KEY).encrypt("x", nonce=b"short")


def test_repr_hides_the_key() -> None:
    # Given a cipher
    # When it is shown
    text = repr(Cipher(VECTOR_2[0]))
    # Then the key is not in it
    assert VECTOR_2[0] not in text
