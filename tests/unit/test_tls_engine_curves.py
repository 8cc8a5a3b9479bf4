"""The twin's elliptic-curve arithmetic on cryptography (ota_rig.virtual.tls_engine) agrees with
tlslite-ng's own pure-Python arithmetic, which it replaces: the same shared secrets, the same
refusals of bad key shares, the same verdicts on ECDSA signatures."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from tlslite.constants import GroupName
from tlslite.errors import TLSIllegalParameterException
from tlslite.utils.python_ecdsakey import Python_ECDSAKey

from ota_rig.virtual import tls_engine

GROUPS = [GroupName.x25519, GroupName.secp256r1, GroupName.secp384r1, GroupName.secp521r1]


def TLSLITE_ECDH(group: int, version: tuple[int, int]) -> Any:
    """tlslite's own ECDHKeyExchange, which _Ecdh stands in for (made without its __init__, which
    names the module's ECDHKeyExchange: _Ecdh now)."""
    kex = object.__new__(tls_engine._Ecdh.__bases__[0])
    kex.group, kex.version = group, version
    return kex


@pytest.mark.parametrize("group", GROUPS, ids=GroupName.toStr)
def test_both_sides_of_an_exchange_get_tlslites_shared_secret(group: int) -> None:
    ours, theirs = tls_engine._Ecdh(group, (3, 3)), TLSLITE_ECDH(group, (3, 3))
    our_key, their_key = ours.get_random_private_key(), theirs.get_random_private_key()
    our_share = ours.calc_public_value(our_key, "uncompressed")
    their_share = theirs.calc_public_value(their_key, "uncompressed")
    secret = ours.calc_shared_key(our_key, their_share, {"uncompressed"})
    assert secret == theirs.calc_shared_key(their_key, our_share, {"uncompressed"})
    assert len(secret) == {GroupName.x25519: 32, GroupName.secp256r1: 32, GroupName.secp384r1: 48,
                           GroupName.secp521r1: 66}[group]


@pytest.mark.parametrize(
    ("group", "share"),
    [
        (GroupName.x25519, bytes(32)),  # a small-order point: the secret would be all zeros
        (GroupName.x25519, bytes(31)),  # too short
        (GroupName.secp256r1, b"\x04" + bytes(64)),  # not on the curve
        (GroupName.secp256r1, b"\x05" + bytes(64)),  # no point encoding
    ],
    ids=["x25519-zero", "x25519-short", "p256-off-curve", "p256-bad-encoding"],
)
def test_a_bad_key_share_is_refused_as_tlslite_refuses_it(group: int, share: bytes) -> None:
    for kex in (tls_engine._Ecdh(group, (3, 3)), TLSLITE_ECDH(group, (3, 3))):
        with pytest.raises(TLSIllegalParameterException):
            kex.calc_shared_key(kex.get_random_private_key(), bytearray(share), {"uncompressed"})


def test_a_compressed_point_is_refused_unless_negotiated() -> None:
    peer = ec.generate_private_key(ec.SECP256R1()).public_key()
    compressed = bytearray(peer.public_bytes(Encoding.X962, PublicFormat.CompressedPoint))
    for kex in (tls_engine._Ecdh(GroupName.secp256r1, (3, 3)), TLSLITE_ECDH(GroupName.secp256r1, (3, 3))):
        with pytest.raises(TLSIllegalParameterException):
            kex.calc_shared_key(kex.get_random_private_key(), compressed, {"uncompressed"})
    ours, theirs = tls_engine._Ecdh(GroupName.secp256r1, (3, 3)), TLSLITE_ECDH(GroupName.secp256r1, (3, 3))
    our_key, their_key = ours.get_random_private_key(), theirs.get_random_private_key()
    their_compressed = theirs.calc_public_value(their_key, "compressed")
    assert ours.calc_shared_key(our_key, their_compressed, {"uncompressed", "compressed"}) == theirs.calc_shared_key(
        their_key, ours.calc_public_value(our_key, "uncompressed"), {"uncompressed"})


@pytest.mark.parametrize(
    ("curve", "name", "hash_name", "cut"),
    [(ec.SECP256R1(), "NIST256p", "sha256", 32), (ec.SECP256R1(), "NIST256p", "sha384", 32),
     (ec.SECP384R1(), "NIST384p", "sha384", 48), (ec.SECP256R1(), "NIST256p", "sha1", 32)],
)
def test_an_ecdsa_signature_gets_tlslites_verdict(curve: ec.EllipticCurve, name: str, hash_name: str, cut: int) -> None:
    """As tlslite checks a ServerKeyExchange: the digest cut to the curve's size (keyexchange.py
    _tls12_verify_ecdsa_SKE), the signature in DER."""
    key = ec.generate_private_key(curve)
    digest = hashlib.new(hash_name, b"client random, server random, params").digest()[:cut]
    chosen = {20: hashes.SHA1(), 32: hashes.SHA256(), 48: hashes.SHA384()}[len(digest)]
    signature = bytearray(key.sign(digest, ec.ECDSA(Prehashed(chosen))))
    numbers = key.public_key().public_numbers()
    ours = tls_engine._ecdsa_key(numbers.x, numbers.y, name)
    theirs = Python_ECDSAKey(numbers.x, numbers.y, name)
    assert type(ours) is not Python_ECDSAKey
    assert ours._verify(signature, bytearray(digest)) is theirs._verify(signature, bytearray(digest)) is True
    tampered = bytearray(digest)
    tampered[0] ^= 1
    assert ours._verify(signature, tampered) is theirs._verify(signature, tampered) is False
    garbage = bytearray(b"\x30\x03\x02\x01")
    assert ours._verify(garbage, bytearray(digest)) is theirs._verify(garbage, bytearray(digest)) is False
