"""ota_rig.server.pki, checked with `cryptography` and Python's ssl rather than Pki's own attributes."""

import datetime
import ipaddress
import ssl
import stat

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from ota_rig.server.pki import Pki

NOW = datetime.datetime.now(datetime.timezone.utc)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


def leaf_of(cert) -> x509.Certificate:
    return x509.load_pem_x509_certificates(cert.cert_pem.read_bytes())[0]


def ca_of(authority) -> x509.Certificate:
    return x509.load_pem_x509_certificate(authority.cert_pem.read_bytes())


def san_of(leaf: x509.Certificate) -> x509.SubjectAlternativeName:
    return leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_dns_cert_names_the_host_as_a_dns_san(pki):
    san = san_of(leaf_of(pki.dns()))
    assert san.get_values_for_type(x509.DNSName) == ["ota.local"]
    assert san.get_values_for_type(x509.IPAddress) == []


def test_ip_cert_has_only_an_ip_san(pki):
    san = san_of(leaf_of(pki.ip()))
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == []


def test_issue_takes_several_identities_and_the_first_is_the_host(pki):
    cert = pki.issue("both", "ota.local", "192.168.1.70")
    san = san_of(leaf_of(cert))
    assert san.get_values_for_type(x509.DNSName) == ["ota.local"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.168.1.70")]
    assert cert.host == "ota.local"


def test_cn_only_ip_has_no_san_extension_and_the_ip_in_the_cn(pki):
    leaf = leaf_of(pki.cn_only_ip("192.168.1.70"))
    with pytest.raises(x509.ExtensionNotFound):
        leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    cn = leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    assert [attribute.value for attribute in cn] == ["192.168.1.70"]
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.ExtendedKeyUsageOID.SERVER_AUTH]


def test_cn_only_ip_is_signed_by_the_main_ca(pki):
    leaf_of(pki.cn_only_ip()).verify_directly_issued_by(ca_of(pki.authority()))


def test_private_keys_are_mode_0600(pki):
    keys = [pki.dns().key_pem, pki.cn_only_ip().key_pem, pki.folder / "ca-main.key"]
    assert [stat.S_IMODE(key.stat().st_mode) for key in keys] == [0o600] * 3


def test_expired_cert_ended_before_now(pki):
    leaf = leaf_of(pki.expired())
    assert leaf.not_valid_before_utc < leaf.not_valid_after_utc < NOW


def test_not_yet_valid_cert_starts_after_now(pki):
    leaf = leaf_of(pki.not_yet_valid())
    assert NOW < leaf.not_valid_before_utc < leaf.not_valid_after_utc


def test_reported_dates_and_fingerprint_match_the_file(pki):
    cert = pki.expired()
    leaf = leaf_of(cert)
    assert (cert.not_before, cert.not_after) == (leaf.not_valid_before_utc, leaf.not_valid_after_utc)
    assert cert.fingerprint == leaf.fingerprint(hashes.SHA256()).hex()
    assert leaf.public_bytes(Encoding.PEM) == cert.cert_pem.read_bytes()


def test_other_ca_leaf_does_not_verify_against_the_main_ca(pki):
    leaf = leaf_of(pki.other_ca())
    main_key = ca_of(pki.authority()).public_key()
    with pytest.raises(InvalidSignature):
        algorithm = ec.ECDSA(leaf.signature_hash_algorithm)
        main_key.verify(leaf.signature, leaf.tbs_certificate_bytes, algorithm)
    leaf.verify_directly_issued_by(ca_of(pki.authority("other")))


def test_self_signed_leaf_is_its_own_issuer_and_names_the_host(pki):
    cert = pki.self_signed()
    leaf = leaf_of(cert)
    assert leaf.issuer == leaf.subject and cert.authority is None
    leaf.verify_directly_issued_by(leaf)
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["ota.local"]
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_dns_from_the_new_ca_is_a_second_certificate_for_the_same_host(pki):
    rotated = pki.dns(ca="new")
    assert rotated is not pki.dns() and rotated.host == pki.dns().host
    leaf_of(rotated).verify_directly_issued_by(ca_of(pki.authority("new")))


def test_authorities_are_kept_by_name_and_kinds_by_identity(pki):
    assert pki.authority() is pki.authority("main")
    assert pki.authority("new") != pki.authority("main")
    assert pki.dns() is pki.dns()
    assert pki.dns("other.local").host == "other.local"


def test_a_name_is_issued_once(pki):
    pki.issue("once", "ota.local")
    with pytest.raises(ValueError, match="already issued"):
        pki.issue("once", "ota.local")


def test_bundle_parses_into_one_certificate_per_authority(pki):
    authorities = [pki.authority(), pki.authority("other"), pki.authority("new")]
    path = pki.write_bundle("bundle.pem", *authorities)
    certs = x509.load_pem_x509_certificates(path.read_bytes())
    assert [cert.subject for cert in certs] == [ca_of(ca).subject for ca in authorities]
    assert path.read_text() == pki.bundle(*authorities)


@pytest.mark.parametrize("kind", ["dns", "ip", "expired", "not_yet_valid", "other_ca", "cn_only_ip", "self_signed"])
def test_python_ssl_server_accepts_cert_and_key(pki, kind):
    cert = getattr(pki, kind)()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.cert_pem, cert.key_pem)  # raises if the key does not match
