#!/usr/bin/env python3
"""Decode TLS ClientHello records and compare them.

Usage:
  decode.py decode HEX
  decode.py compare HEX_A HEX_B     (A = approximate, B = real)
"""
import json
import sys

SUITES = {}
# Names from Mbed TLS include/mbedtls/ssl_ciphersuites.h (IANA code points)
_NAMES = """
0x002F RSA_WITH_AES_128_CBC_SHA
0x0033 DHE_RSA_WITH_AES_128_CBC_SHA
0x0035 RSA_WITH_AES_256_CBC_SHA
0x0039 DHE_RSA_WITH_AES_256_CBC_SHA
0x003C RSA_WITH_AES_128_CBC_SHA256
0x003D RSA_WITH_AES_256_CBC_SHA256
0x0041 RSA_WITH_CAMELLIA_128_CBC_SHA
0x0045 DHE_RSA_WITH_CAMELLIA_128_CBC_SHA
0x0067 DHE_RSA_WITH_AES_128_CBC_SHA256
0x006B DHE_RSA_WITH_AES_256_CBC_SHA256
0x0084 RSA_WITH_CAMELLIA_256_CBC_SHA
0x0088 DHE_RSA_WITH_CAMELLIA_256_CBC_SHA
0x008C PSK_WITH_AES_128_CBC_SHA
0x008D PSK_WITH_AES_256_CBC_SHA
0x0094 RSA_PSK_WITH_AES_128_CBC_SHA
0x0095 RSA_PSK_WITH_AES_256_CBC_SHA
0x009C RSA_WITH_AES_128_GCM_SHA256
0x009D RSA_WITH_AES_256_GCM_SHA384
0x009E DHE_RSA_WITH_AES_128_GCM_SHA256
0x009F DHE_RSA_WITH_AES_256_GCM_SHA384
0x00A8 PSK_WITH_AES_128_GCM_SHA256
0x00A9 PSK_WITH_AES_256_GCM_SHA384
0x00AC RSA_PSK_WITH_AES_128_GCM_SHA256
0x00AD RSA_PSK_WITH_AES_256_GCM_SHA384
0x00AE PSK_WITH_AES_128_CBC_SHA256
0x00AF PSK_WITH_AES_256_CBC_SHA384
0x00B6 RSA_PSK_WITH_AES_128_CBC_SHA256
0x00B7 RSA_PSK_WITH_AES_256_CBC_SHA384
0x00BA RSA_WITH_CAMELLIA_128_CBC_SHA256
0x00BE DHE_RSA_WITH_CAMELLIA_128_CBC_SHA256
0x00C0 RSA_WITH_CAMELLIA_256_CBC_SHA256
0x00C4 DHE_RSA_WITH_CAMELLIA_256_CBC_SHA256
0x00FF EMPTY_RENEGOTIATION_INFO_SCSV
0x5600 FALLBACK_SCSV
0xC004 ECDH_ECDSA_WITH_AES_128_CBC_SHA
0xC005 ECDH_ECDSA_WITH_AES_256_CBC_SHA
0xC009 ECDHE_ECDSA_WITH_AES_128_CBC_SHA
0xC00A ECDHE_ECDSA_WITH_AES_256_CBC_SHA
0xC00E ECDH_RSA_WITH_AES_128_CBC_SHA
0xC00F ECDH_RSA_WITH_AES_256_CBC_SHA
0xC013 ECDHE_RSA_WITH_AES_128_CBC_SHA
0xC014 ECDHE_RSA_WITH_AES_256_CBC_SHA
0xC023 ECDHE_ECDSA_WITH_AES_128_CBC_SHA256
0xC024 ECDHE_ECDSA_WITH_AES_256_CBC_SHA384
0xC025 ECDH_ECDSA_WITH_AES_128_CBC_SHA256
0xC026 ECDH_ECDSA_WITH_AES_256_CBC_SHA384
0xC027 ECDHE_RSA_WITH_AES_128_CBC_SHA256
0xC028 ECDHE_RSA_WITH_AES_256_CBC_SHA384
0xC029 ECDH_RSA_WITH_AES_128_CBC_SHA256
0xC02A ECDH_RSA_WITH_AES_256_CBC_SHA384
0xC02B ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
0xC02C ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
0xC02D ECDH_ECDSA_WITH_AES_128_GCM_SHA256
0xC02E ECDH_ECDSA_WITH_AES_256_GCM_SHA384
0xC02F ECDHE_RSA_WITH_AES_128_GCM_SHA256
0xC030 ECDHE_RSA_WITH_AES_256_GCM_SHA384
0xC031 ECDH_RSA_WITH_AES_128_GCM_SHA256
0xC032 ECDH_RSA_WITH_AES_256_GCM_SHA384
0xC035 ECDHE_PSK_WITH_AES_128_CBC_SHA
0xC036 ECDHE_PSK_WITH_AES_256_CBC_SHA
0xC037 ECDHE_PSK_WITH_AES_128_CBC_SHA256
0xC038 ECDHE_PSK_WITH_AES_256_CBC_SHA384
0xC03C RSA_WITH_ARIA_128_CBC_SHA256
0xC03D RSA_WITH_ARIA_256_CBC_SHA384
0xC044 DHE_RSA_WITH_ARIA_128_CBC_SHA256
0xC045 DHE_RSA_WITH_ARIA_256_CBC_SHA384
0xC048 ECDHE_ECDSA_WITH_ARIA_128_CBC_SHA256
0xC049 ECDHE_ECDSA_WITH_ARIA_256_CBC_SHA384
0xC04A ECDH_ECDSA_WITH_ARIA_128_CBC_SHA256
0xC04B ECDH_ECDSA_WITH_ARIA_256_CBC_SHA384
0xC04C ECDHE_RSA_WITH_ARIA_128_CBC_SHA256
0xC04D ECDHE_RSA_WITH_ARIA_256_CBC_SHA384
0xC04E ECDH_RSA_WITH_ARIA_128_CBC_SHA256
0xC04F ECDH_RSA_WITH_ARIA_256_CBC_SHA384
0xC050 RSA_WITH_ARIA_128_GCM_SHA256
0xC051 RSA_WITH_ARIA_256_GCM_SHA384
0xC052 DHE_RSA_WITH_ARIA_128_GCM_SHA256
0xC053 DHE_RSA_WITH_ARIA_256_GCM_SHA384
0xC05C ECDHE_ECDSA_WITH_ARIA_128_GCM_SHA256
0xC05D ECDHE_ECDSA_WITH_ARIA_256_GCM_SHA384
0xC05E ECDH_ECDSA_WITH_ARIA_128_GCM_SHA256
0xC05F ECDH_ECDSA_WITH_ARIA_256_GCM_SHA384
0xC060 ECDHE_RSA_WITH_ARIA_128_GCM_SHA256
0xC061 ECDHE_RSA_WITH_ARIA_256_GCM_SHA384
0xC062 ECDH_RSA_WITH_ARIA_128_GCM_SHA256
0xC063 ECDH_RSA_WITH_ARIA_256_GCM_SHA384
0xC064 PSK_WITH_ARIA_128_CBC_SHA256
0xC065 PSK_WITH_ARIA_256_CBC_SHA384
0xC068 RSA_PSK_WITH_ARIA_128_CBC_SHA256
0xC069 RSA_PSK_WITH_ARIA_256_CBC_SHA384
0xC06A PSK_WITH_ARIA_128_GCM_SHA256
0xC06B PSK_WITH_ARIA_256_GCM_SHA384
0xC06E RSA_PSK_WITH_ARIA_128_GCM_SHA256
0xC06F RSA_PSK_WITH_ARIA_256_GCM_SHA384
0xC070 ECDHE_PSK_WITH_ARIA_128_CBC_SHA256
0xC071 ECDHE_PSK_WITH_ARIA_256_CBC_SHA384
0xC072 ECDHE_ECDSA_WITH_CAMELLIA_128_CBC_SHA256
0xC073 ECDHE_ECDSA_WITH_CAMELLIA_256_CBC_SHA384
0xC074 ECDH_ECDSA_WITH_CAMELLIA_128_CBC_SHA256
0xC075 ECDH_ECDSA_WITH_CAMELLIA_256_CBC_SHA384
0xC076 ECDHE_RSA_WITH_CAMELLIA_128_CBC_SHA256
0xC077 ECDHE_RSA_WITH_CAMELLIA_256_CBC_SHA384
0xC078 ECDH_RSA_WITH_CAMELLIA_128_CBC_SHA256
0xC079 ECDH_RSA_WITH_CAMELLIA_256_CBC_SHA384
0xC07A RSA_WITH_CAMELLIA_128_GCM_SHA256
0xC07B RSA_WITH_CAMELLIA_256_GCM_SHA384
0xC07C DHE_RSA_WITH_CAMELLIA_128_GCM_SHA256
0xC07D DHE_RSA_WITH_CAMELLIA_256_GCM_SHA384
0xC086 ECDHE_ECDSA_WITH_CAMELLIA_128_GCM_SHA256
0xC087 ECDHE_ECDSA_WITH_CAMELLIA_256_GCM_SHA384
0xC088 ECDH_ECDSA_WITH_CAMELLIA_128_GCM_SHA256
0xC089 ECDH_ECDSA_WITH_CAMELLIA_256_GCM_SHA384
0xC08A ECDHE_RSA_WITH_CAMELLIA_128_GCM_SHA256
0xC08B ECDHE_RSA_WITH_CAMELLIA_256_GCM_SHA384
0xC08C ECDH_RSA_WITH_CAMELLIA_128_GCM_SHA256
0xC08D ECDH_RSA_WITH_CAMELLIA_256_GCM_SHA384
0xC09C RSA_WITH_AES_128_CCM
0xC09D RSA_WITH_AES_256_CCM
0xC09E DHE_RSA_WITH_AES_128_CCM
0xC09F DHE_RSA_WITH_AES_256_CCM
0xC0A0 RSA_WITH_AES_128_CCM_8
0xC0A1 RSA_WITH_AES_256_CCM_8
0xC0A2 DHE_RSA_WITH_AES_128_CCM_8
0xC0A3 DHE_RSA_WITH_AES_256_CCM_8
0xC0AC ECDHE_ECDSA_WITH_AES_128_CCM
0xC0AD ECDHE_ECDSA_WITH_AES_256_CCM
0xC0AE ECDHE_ECDSA_WITH_AES_128_CCM_8
0xC0AF ECDHE_ECDSA_WITH_AES_256_CCM_8
0xC0FF ECJPAKE_WITH_AES_128_CCM_8
"""
for line in _NAMES.strip().splitlines():
    code, name = line.split()
    SUITES[int(code, 16)] = "TLS_" + name

GROUPS = {0x0013: "secp192r1", 0x0015: "secp224r1", 0x0017: "secp256r1", 0x0018: "secp384r1",
          0x0019: "secp521r1", 0x0012: "secp192k1", 0x0014: "secp224k1", 0x0016: "secp256k1",
          0x001A: "brainpoolP256r1", 0x001B: "brainpoolP384r1", 0x001C: "brainpoolP512r1",
          0x001D: "x25519", 0x001E: "x448"}
SIGALGS = {0x0603: "ecdsa_secp521r1_sha512", 0x0601: "rsa_pkcs1_sha512",
           0x0503: "ecdsa_secp384r1_sha384", 0x0501: "rsa_pkcs1_sha384",
           0x0403: "ecdsa_secp256r1_sha256", 0x0401: "rsa_pkcs1_sha256",
           0x0303: "ecdsa_sha224", 0x0301: "rsa_sha224", 0x0203: "ecdsa_sha1", 0x0201: "rsa_pkcs1_sha1",
           0x0804: "rsa_pss_rsae_sha256", 0x0805: "rsa_pss_rsae_sha384", 0x0806: "rsa_pss_rsae_sha512"}
EXTS = {0x0000: "server_name", 0x0001: "max_fragment_length", 0x000A: "supported_groups",
        0x000B: "ec_point_formats", 0x000D: "signature_algorithms", 0x000E: "use_srtp",
        0x0010: "alpn", 0x0016: "encrypt_then_mac", 0x0017: "extended_master_secret",
        0x0023: "session_ticket", 0x002B: "supported_versions", 0x0033: "key_share",
        0x0036: "connection_id", 0x0100: "ecjpake_kkpp", 0xFF01: "renegotiation_info"}


def h16(v):
    return f"0x{v:04X}"


def decode(hexstr):
    b = bytes.fromhex(hexstr)
    out = {"record_content_type": b[0], "record_version": h16(int.from_bytes(b[1:3], "big")),
           "record_length": int.from_bytes(b[3:5], "big")}
    hs = b[5:]
    out["handshake_type"] = hs[0]
    out["handshake_length"] = int.from_bytes(hs[1:4], "big")
    p = hs[4:]
    out["client_version"] = h16(int.from_bytes(p[0:2], "big"))
    out["random"] = p[2:34].hex()
    i = 34
    sid_len = p[i]
    out["session_id"] = p[i + 1:i + 1 + sid_len].hex()
    i += 1 + sid_len
    cs_len = int.from_bytes(p[i:i + 2], "big")
    i += 2
    cs = [int.from_bytes(p[j:j + 2], "big") for j in range(i, i + cs_len, 2)]
    i += cs_len
    out["cipher_suites"] = [h16(c) for c in cs]
    out["cipher_suite_names"] = [SUITES.get(c, "?") for c in cs]
    cm_len = p[i]
    out["compression_methods"] = list(p[i + 1:i + 1 + cm_len])
    i += 1 + cm_len
    ext_total = int.from_bytes(p[i:i + 2], "big")
    i += 2
    out["extensions_length"] = ext_total
    exts = []
    end = i + ext_total
    while i < end:
        et = int.from_bytes(p[i:i + 2], "big")
        el = int.from_bytes(p[i + 2:i + 4], "big")
        data = p[i + 4:i + 4 + el]
        i += 4 + el
        e = {"type": h16(et), "name": EXTS.get(et, "?"), "length": el, "data": data.hex()}
        if et == 0x000A:
            e["groups"] = [GROUPS.get(int.from_bytes(data[k:k + 2], "big"), h16(int.from_bytes(data[k:k + 2], "big")))
                           for k in range(2, 2 + int.from_bytes(data[0:2], "big"), 2)]
            out["groups"] = e["groups"]
        if et == 0x000D:
            e["sig_algs"] = [
                SIGALGS.get(int.from_bytes(data[k : k + 2], "big"), h16(int.from_bytes(data[k : k + 2], "big")))
                for k in range(2, 2 + int.from_bytes(data[0:2], "big"), 2)
            ]
            out["signature_algorithms"] = e["sig_algs"]
            out["signature_algorithms_hex"] = [
                h16(int.from_bytes(data[k : k + 2], "big")) for k in range(2, 2 + int.from_bytes(data[0:2], "big"), 2)
            ]
        if et == 0x0000:
            e["host_name"] = data[5:].decode()
        if et == 0x000B:
            e["formats"] = list(data[1 : 1 + data[0]])
        exts.append(e)
    out["extensions"] = exts
    out["extension_order"] = [f"{e['name']}({e['type']})" for e in exts]
    assert i == len(p), (i, len(p))
    return out


def compare(a_hex, b_hex):
    a, b = decode(a_hex), decode(b_hex)
    rep = {}
    for k in (
        "record_version",
        "client_version",
        "record_length",
        "handshake_length",
        "extensions_length",
        "session_id",
        "compression_methods",
        "groups",
        "signature_algorithms",
        "extension_order",
    ):
        if a.get(k) != b.get(k):
            rep[k] = {"approx": a.get(k), "real": b.get(k)}
    sa, sb = a["cipher_suites"], b["cipher_suites"]
    only_a = [s for s in sa if s not in sb]
    only_b = [s for s in sb if s not in sa]

    def name(s):
        return SUITES.get(int(s, 16), "?")

    rep["suites_only_in_approx"] = [f"{s} {name(s)}" for s in only_a]
    rep["suites_only_in_real"] = [f"{s} {name(s)}" for s in only_b]
    common_a = [s for s in sa if s in sb]
    common_b = [s for s in sb if s in sa]
    rep["common_suites_same_relative_order"] = common_a == common_b
    rep["suite_counts"] = {"approx": len(sa), "real": len(sb)}
    ea = {e["type"]: e["data"] for e in a["extensions"]}
    eb = {e["type"]: e["data"] for e in b["extensions"]}
    rep["extension_payload_differences"] = {
        t: {"approx": ea.get(t), "real": eb.get(t)} for t in sorted(set(ea) | set(eb)) if ea.get(t) != eb.get(t)
    }
    # approx with only DHE-RSA removed == real?  (ignoring random)
    return rep


if __name__ == "__main__":
    if sys.argv[1] == "decode":
        print(json.dumps(decode(sys.argv[2]), indent=1))
    else:
        print(json.dumps(compare(sys.argv[2], sys.argv[3]), indent=1))
