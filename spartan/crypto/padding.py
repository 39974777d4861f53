"""Padding of plaintexts before encryption, so a ciphertext's length tells the server little.

AES-GCM keeps the plaintext's length, and lengths alone tell a lot (a "yes" from a
long answer, which of a few known texts was sent). Every 1:1 and group plaintext is
padded to the next multiple of `PAD_BLOCK` bytes (ISO/IEC 7816-4: one 0x80 byte, then
zeros), so the server learns the length only to within 64 bytes; a plaintext that
already fills a block gets one more. The padding is inside the authenticated
ciphertext, so nobody can change it without the tag failing first.
"""

from __future__ import annotations

from spartan.crypto.encoding import DecryptError

PAD_BLOCK = 64
MARK = 0x80


def pad(plaintext: bytes) -> bytes:
    """`plaintext`, 0x80, then zeros up to the next multiple of `PAD_BLOCK`."""
    fill = PAD_BLOCK - (len(plaintext) + 1) % PAD_BLOCK
    return plaintext + bytes((MARK,)) + bytes(fill % PAD_BLOCK)


def unpad(padded: bytes) -> bytes:
    """The plaintext `pad` made `padded` from; `DecryptError` if it is not padded that way."""
    if not padded or len(padded) % PAD_BLOCK:
        raise DecryptError("a padded plaintext has the wrong length")
    end = len(padded.rstrip(b"\x00")) - 1
    if end < 0 or padded[end] != MARK or len(padded) - end > PAD_BLOCK:
        raise DecryptError("a padded plaintext does not end with its padding")
    return padded[:end]
