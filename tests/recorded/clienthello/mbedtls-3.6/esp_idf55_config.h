/*
 * esp_idf55_config.h -- Mbed TLS 3.6.x configuration equivalent to what
 * ESP-IDF v5.5.x produces for arduino-esp32 3.3.x (target esp32).
 *
 * HOW ESP-IDF BUILDS ITS CONFIG (verified):
 *   - esp-idf v5.5.1 components/mbedtls/CMakeLists.txt line ~346:
 *       target_compile_definitions(... -DMBEDTLS_CONFIG_FILE="mbedtls/esp_config.h")
 *   - esp-idf v5.5.1 components/mbedtls/port/include/mbedtls/esp_config.h line 29:
 *       #include "mbedtls/mbedtls_config.h"   <- the Mbed TLS library's DEFAULT config
 *     and then #define / #undef overrides driven by sdkconfig.h (CONFIG_MBEDTLS_*).
 *   So every macro NOT touched by esp_config.h keeps the upstream default
 *   (e.g. MBEDTLS_ARIA_C stays ON, MBEDTLS_SSL_SERVER_NAME_INDICATION etc.).
 *   This file reproduces exactly that: include upstream default, then overrides.
 *
 * sdkconfig used = ESP-IDF v5.5.1 components/mbedtls/Kconfig defaults
 *   + espressif/esp32-arduino-lib-builder master (ee57070c) configs/defconfig.common:
 *     CONFIG_MBEDTLS_PSK_MODES=y, KEY_EXCHANGE_PSK=y, KEY_EXCHANGE_ECJPAKE=y,
 *     ECJPAKE_C=y, HKDF_C=y, CMAC_C=y, SSL_PROTO_DTLS=y, CAMELLIA_C=y,
 *     GCM_SUPPORT_NON_AES_CIPHER=y, DYNAMIC_BUFFER=y, DYNAMIC_FREE_PEER_CERT=y,
 *     DYNAMIC_FREE_CONFIG_DATA=y, ASYMMETRIC_CONTENT_LEN not set.
 *   (configs/defconfig.esp32 has no MBEDTLS lines.)
 * esp_config.h is identical in v5.5.1..v5.5.4 (blob 54f49bdc); v5.5 lacks the
 * KEYING_MATERIAL_EXPORT block (Kconfig default n anyway); v5.5.5 / release/v5.5
 * only add CONFIG_IDF_TARGET_LINUX guards and MBEDTLS_MPI_PRIME_SIEVE_VARIABLE_TIME.
 *
 * Abbreviations in comments:
 *   [UP]   upstream Mbed TLS include/mbedtls/mbedtls_config.h default (kept by esp_config.h)
 *   [KC]   ESP-IDF Kconfig default -> esp_config.h #ifdef CONFIG_... mapping
 *   [LB]   lib-builder defconfig.common -> esp_config.h mapping
 *   [FIX]  esp_config.h unconditional define/undef
 *   [DROP] present in the real ESP-IDF build but omitted here (Linux build); none
 *          of them affects ClientHello content.
 * Cross-check: derive/ in this folder evaluates the real esp_config.h with a
 * synthetic sdkconfig.h; `gcc -dM` macro sets are compared in REPORT.md.
 */
#include "mbedtls/mbedtls_config.h"   /* [UP] exactly as esp_config.h line 29 */

/* ---------------- ClientHello-relevant: protocol versions ---------------- */
#define MBEDTLS_SSL_PROTO_TLS1_2            /* [KC] SSL_PROTO_TLS1_2 default y */
#undef  MBEDTLS_SSL_PROTO_TLS1_3            /* [KC] SSL_PROTO_TLS1_3 default n -> no supported_versions/key_share */
#define MBEDTLS_SSL_PROTO_DTLS              /* [LB] SSL_PROTO_DTLS=y (no effect on TLS stream ClientHello) */
#define MBEDTLS_SSL_TLS_C                   /* [KC] TLS_ENABLED */
#define MBEDTLS_SSL_CLI_C                   /* [KC] TLS role default SERVER_AND_CLIENT */
#define MBEDTLS_SSL_SRV_C                   /* [KC] idem */

/* ---------------- ClientHello-relevant: key exchanges -> cipher suites ---------------- */
#define MBEDTLS_KEY_EXCHANGE_RSA_ENABLED            /* [KC] default y */
#undef  MBEDTLS_KEY_EXCHANGE_DHE_RSA_ENABLED        /* [KC] depends on DHM_C (default n) -> symbol absent -> #undef */
#define MBEDTLS_KEY_EXCHANGE_ECDHE_RSA_ENABLED      /* [KC] default y */
#define MBEDTLS_KEY_EXCHANGE_ECDHE_ECDSA_ENABLED    /* [KC] default y */
#define MBEDTLS_KEY_EXCHANGE_ECDH_ECDSA_ENABLED     /* [KC] default y */
#define MBEDTLS_KEY_EXCHANGE_ECDH_RSA_ENABLED       /* [KC] default y */
#define MBEDTLS_KEY_EXCHANGE_PSK_ENABLED            /* [LB] KEY_EXCHANGE_PSK=y */
#undef  MBEDTLS_KEY_EXCHANGE_DHE_PSK_ENABLED        /* [KC] depends on DHM_C (n) */
#define MBEDTLS_KEY_EXCHANGE_ECDHE_PSK_ENABLED      /* [KC] default y when PSK_MODES [LB] */
#define MBEDTLS_KEY_EXCHANGE_RSA_PSK_ENABLED        /* [KC] default y when PSK_MODES [LB] */
#define MBEDTLS_KEY_EXCHANGE_ECJPAKE_ENABLED        /* [LB] KEY_EXCHANGE_ECJPAKE=y (upstream default: off) */
/* PSK / ECJPAKE suites are filtered out of the ClientHello by Mbed TLS when no
 * PSK / EC J-PAKE password is configured (ssl_client.c ssl_write_client_hello_cipher_suites
 * -> mbedtls_ssl_validate_ciphersuite); arduino's ssl_client.cpp sets none. */

/* ---------------- ClientHello-relevant: ciphers / modes / hashes ---------------- */
#define MBEDTLS_AES_C                       /* [KC] AES_C default y */
#define MBEDTLS_CAMELLIA_C                  /* [LB] CAMELLIA_C=y */
/* MBEDTLS_ARIA_C stays defined: [UP] default ON, esp_config.h never touches ARIA. */
#undef  MBEDTLS_DES_C                       /* [KC] DES_C default n */
#undef  MBEDTLS_CHACHA20_C                  /* [KC] default n */
#undef  MBEDTLS_POLY1305_C                  /* [KC] default n */
#undef  MBEDTLS_CHACHAPOLY_C                /* [KC] default n */
#define MBEDTLS_GCM_C                       /* [KC] default y */
#define MBEDTLS_CCM_C                       /* [KC] default y (CCM / CCM_8 suites) */
#define MBEDTLS_CIPHER_MODE_CBC             /* [FIX] */
#define MBEDTLS_CIPHER_MODE_CFB             /* [FIX] */
#define MBEDTLS_CIPHER_MODE_CTR             /* [FIX] */
#define MBEDTLS_CIPHER_MODE_OFB             /* [FIX] */
#define MBEDTLS_CIPHER_MODE_XTS             /* [FIX] */
#define MBEDTLS_SHA1_C                      /* [KC] SHA1_C default y */
#define MBEDTLS_SHA224_C                    /* [FIX] */
#define MBEDTLS_SHA256_C                    /* [FIX] */
#define MBEDTLS_SHA384_C                    /* [KC] SHA512_C default y -> SHA384_C + SHA512_C */
#define MBEDTLS_SHA512_C                    /* [KC] idem (SHA-512 sig_algs 0x0603/0x0601) */
#undef  MBEDTLS_SHA3_C                      /* [KC] default n */
#undef  MBEDTLS_RIPEMD160_C                 /* [KC] default n */
#define MBEDTLS_MD5_C                       /* [FIX] */
#undef  MBEDTLS_DHM_C                       /* [KC] DHM_C default n */
#undef  MBEDTLS_NIST_KW_C                   /* [KC] default n */
#define MBEDTLS_CMAC_C                      /* [LB] CMAC_C=y */
#define MBEDTLS_HKDF_C                      /* [LB] HKDF_C=y */
#define MBEDTLS_PKCS1_V15                   /* [FIX] */
#define MBEDTLS_PKCS1_V21                   /* [FIX] (RSA-PSS sig_algs need TLS1.3; not sent in 1.2) */
#define MBEDTLS_RSA_C                       /* [FIX] */

/* ---------------- ClientHello-relevant: elliptic curves (supported_groups) ---------------- */
#define MBEDTLS_ECP_C                       /* [KC] default y */
#define MBEDTLS_ECDH_C                      /* [KC] default y */
#define MBEDTLS_ECDSA_C                     /* [KC] default y */
#define MBEDTLS_ECJPAKE_C                   /* [LB] ECJPAKE_C=y */
#define MBEDTLS_ECP_DP_SECP192R1_ENABLED    /* [KC] default y */
#define MBEDTLS_ECP_DP_SECP224R1_ENABLED    /* [KC] default y */
#define MBEDTLS_ECP_DP_SECP256R1_ENABLED    /* [KC] default y */
#define MBEDTLS_ECP_DP_SECP384R1_ENABLED    /* [KC] default y */
#define MBEDTLS_ECP_DP_SECP521R1_ENABLED    /* [KC] default y */
#define MBEDTLS_ECP_DP_SECP192K1_ENABLED    /* [KC] default y */
#define MBEDTLS_ECP_DP_SECP224K1_ENABLED    /* [KC] default y */
#define MBEDTLS_ECP_DP_SECP256K1_ENABLED    /* [KC] default y */
#define MBEDTLS_ECP_DP_BP256R1_ENABLED      /* [KC] default y */
#define MBEDTLS_ECP_DP_BP384R1_ENABLED      /* [KC] default y */
#define MBEDTLS_ECP_DP_BP512R1_ENABLED      /* [KC] default y */
#define MBEDTLS_ECP_DP_CURVE25519_ENABLED   /* [KC] default y */
#undef  MBEDTLS_ECP_DP_CURVE448_ENABLED     /* [FIX] esp_config.h always #undef */
#define MBEDTLS_ECP_NIST_OPTIM              /* [KC] default y */
#undef  MBEDTLS_ECP_FIXED_POINT_OPTIM
#define MBEDTLS_ECP_FIXED_POINT_OPTIM 0     /* [KC] ECP_FIXED_POINT_OPTIM default n -> esp_config.h defines 0 */
#define MBEDTLS_ECDSA_DETERMINISTIC         /* [KC] default y */
#define MBEDTLS_PK_PARSE_EC_EXTENDED        /* [KC] default y */
#define MBEDTLS_PK_PARSE_EC_COMPRESSED      /* [KC] default y */

/* ---------------- ClientHello-relevant: extensions ---------------- */
#define MBEDTLS_SSL_SERVER_NAME_INDICATION  /* [FIX] -> server_name (0x0000) when hostname set */
#define MBEDTLS_SSL_MAX_FRAGMENT_LENGTH     /* [FIX] -> ext 0x0001 only if mfl configured (it is not) */
#define MBEDTLS_SSL_ENCRYPT_THEN_MAC        /* [FIX] (CONFIG_MBEDTLS_TLS_ENABLED) -> encrypt_then_mac 0x0016 */
#define MBEDTLS_SSL_EXTENDED_MASTER_SECRET  /* [FIX] (CONFIG_MBEDTLS_TLS_ENABLED) -> extended_master_secret 0x0017 */
#define MBEDTLS_SSL_SESSION_TICKETS         /* [KC] CLIENT_SSL_SESSION_TICKETS default y -> session_ticket 0x0023 */
#define MBEDTLS_SSL_TICKET_C                /* [KC] SERVER_SSL_SESSION_TICKETS default y */
#define MBEDTLS_SSL_ALPN                    /* [KC] SSL_ALPN default y (ext only if protocols set: not by arduino) */
#define MBEDTLS_SSL_RENEGOTIATION           /* [KC] default y -> TLS_EMPTY_RENEGOTIATION_INFO_SCSV 0x00FF */
#define MBEDTLS_SSL_FALLBACK_SCSV           /* [FIX] (0x5600 only if fallback set: not set) */
#undef  MBEDTLS_SSL_DTLS_CONNECTION_ID      /* [KC] default n */
#undef  MBEDTLS_SSL_DTLS_CONNECTION_ID_COMPAT /* [FIX] */
#define MBEDTLS_SSL_DTLS_ANTI_REPLAY        /* [LB] PROTO_DTLS */
#define MBEDTLS_SSL_DTLS_HELLO_VERIFY       /* [LB] PROTO_DTLS */
#define MBEDTLS_SSL_DTLS_SRTP               /* [LB] PROTO_DTLS (upstream default off; DTLS only) */
#define MBEDTLS_SSL_DTLS_CLIENT_PORT_REUSE  /* [LB] PROTO_DTLS */
#undef  MBEDTLS_SSL_CONTEXT_SERIALIZATION   /* [KC] default n */
#undef  MBEDTLS_SSL_KEYING_MATERIAL_EXPORT  /* [KC] default n */
#define MBEDTLS_SSL_KEEP_PEER_CERTIFICATE   /* [KC] default y */
#undef  MBEDTLS_SSL_VARIABLE_BUFFER_LENGTH  /* [KC] default n */
#define MBEDTLS_SSL_ALL_ALERT_MESSAGES      /* [FIX] */
#define MBEDTLS_SSL_MAX_CONTENT_LEN 16384   /* [KC] SSL_MAX_CONTENT_LEN default 16384 (ASYMMETRIC_CONTENT_LEN unset by [LB]) */
#undef  MBEDTLS_SSL_CLI_ALLOW_WEAK_CERTIFICATE_VERIFICATION_WITHOUT_HOSTNAME /* [KC] default n */
/* TLS 1.3-only tunables defined by [FIX]; inert because TLS1_3 is off */
#define MBEDTLS_SSL_TLS1_3_COMPATIBILITY_MODE
#define MBEDTLS_SSL_TLS1_3_KEY_EXCHANGE_MODE_PSK_ENABLED
#define MBEDTLS_SSL_TLS1_3_KEY_EXCHANGE_MODE_EPHEMERAL_ENABLED
#define MBEDTLS_SSL_TLS1_3_KEY_EXCHANGE_MODE_PSK_EPHEMERAL_ENABLED
#define MBEDTLS_SSL_TLS1_3_TICKET_AGE_TOLERANCE 6000
#define MBEDTLS_SSL_TLS1_3_TICKET_NONCE_LENGTH 32
#define MBEDTLS_SSL_TLS1_3_DEFAULT_NEW_SESSION_TICKETS 1
#define MBEDTLS_SSL_MAX_EARLY_DATA_SIZE 1024

/* ---------------- Other (not ClientHello-relevant) ---------------- */
#define MBEDTLS_HAVE_TIME                   /* [KC] default y */
#undef  MBEDTLS_HAVE_TIME_DATE              /* [KC] default n */
#undef  MBEDTLS_PLATFORM_TIME_ALT           /* [KC] default n */
#define MBEDTLS_PLATFORM_MEMORY             /* [FIX] */
#define MBEDTLS_AES_ROM_TABLES              /* [FIX] */
#define MBEDTLS_CIPHER_PADDING_PKCS7        /* [FIX] */
#define MBEDTLS_CIPHER_PADDING_ONE_AND_ZEROS
#define MBEDTLS_CIPHER_PADDING_ZEROS_AND_LEN
#define MBEDTLS_CIPHER_PADDING_ZEROS
#undef  MBEDTLS_ECP_RESTARTABLE             /* [KC] default n */
#undef  MBEDTLS_ECDH_LEGACY_CONTEXT         /* [KC] default n */
#define MBEDTLS_ERROR_C                     /* [KC] ERROR_STRINGS default y */
#define MBEDTLS_ERROR_STRERROR_DUMMY        /* [FIX] */
#define MBEDTLS_GENPRIME                    /* [FIX] */
#define MBEDTLS_FS_IO                       /* [KC] FS_IO default y (needed by ssl_client2 ca_file too) */
#define MBEDTLS_PK_RSA_ALT_SUPPORT          /* [FIX] */
#define MBEDTLS_SELF_TEST                   /* [FIX] */
#define MBEDTLS_VERSION_FEATURES            /* [FIX] */
#define MBEDTLS_X509_RSASSA_PSS_SUPPORT     /* [FIX] */
#define MBEDTLS_AESNI_C                     /* [FIX] (x86 only; inert on Xtensa) */
#define MBEDTLS_PADLOCK_C                   /* [FIX] (x86 only) */
#define MBEDTLS_ASN1_PARSE_C
#define MBEDTLS_ASN1_WRITE_C
#define MBEDTLS_BASE64_C
#define MBEDTLS_BIGNUM_C
#undef  MBEDTLS_BLOWFISH_C                  /* [KC] default n (no-op in 3.x) */
#undef  MBEDTLS_XTEA_C                      /* [KC] default n (no-op in 3.x) */
#define MBEDTLS_CIPHER_C
#define MBEDTLS_CTR_DRBG_C
#undef  MBEDTLS_DEBUG_C                     /* [KC] MBEDTLS_DEBUG default n */
#define MBEDTLS_ENTROPY_C
#define MBEDTLS_HMAC_DRBG_C
#define MBEDTLS_MD_C
#define MBEDTLS_OID_C
#define MBEDTLS_PEM_PARSE_C                 /* [KC] default y */
#define MBEDTLS_PEM_WRITE_C                 /* [KC] default y */
#define MBEDTLS_PK_C
#define MBEDTLS_PK_PARSE_C
#define MBEDTLS_PK_WRITE_C
#define MBEDTLS_PKCS5_C
#define MBEDTLS_PKCS7_C                     /* [KC] default y */
#define MBEDTLS_PKCS12_C
#define MBEDTLS_PLATFORM_C
#define MBEDTLS_SSL_CACHE_C
#define MBEDTLS_SSL_COOKIE_C
#define MBEDTLS_VERSION_C
#define MBEDTLS_X509_USE_C
#define MBEDTLS_X509_CRT_PARSE_C
#define MBEDTLS_X509_CRL_PARSE_C            /* [KC] default y */
#define MBEDTLS_X509_CSR_PARSE_C            /* [KC] default y */
#define MBEDTLS_X509_CREATE_C
#define MBEDTLS_X509_CRT_WRITE_C
#define MBEDTLS_X509_CSR_WRITE_C
#undef  MBEDTLS_X509_TRUSTED_CERTIFICATE_CALLBACK /* [KC] default n */
#undef  MBEDTLS_THREADING_C                 /* [KC] default n */
#undef  MBEDTLS_THREADING_ALT
#undef  MBEDTLS_THREADING_PTHREAD
#define MBEDTLS_DEPRECATED_REMOVED          /* [FIX] */
/* Obsolete 2.x names esp_config.h still defines; no effect in Mbed TLS 3.6: */
#define MBEDTLS_CERTS_C
#define MBEDTLS_SSL_EXPORT_KEYS
#define MBEDTLS_TLS_DEFAULT_ALLOW_SHA1_IN_KEY_EXCHANGE

/* ---------------- [DROP] Linux-build deviations from the real ESP-IDF build ----------------
 * Hardware / ROM acceleration (CONFIG_MBEDTLS_HARDWARE_AES/SHA/MPI, ROM_MD5 default y on esp32):
 *   MBEDTLS_AES_ALT, MBEDTLS_GCM_ALT, MBEDTLS_GCM_NON_AES_CIPHER_SOFT_FALLBACK,
 *   MBEDTLS_SHA1_ALT, MBEDTLS_SHA256_ALT, MBEDTLS_SHA512_ALT, MBEDTLS_MD5_ALT,
 *   MBEDTLS_MPI_EXP_MOD_ALT(_FALLBACK), MBEDTLS_MPI_MUL_MPI_ALT  -- dropped (need ESP32 hw drivers).
 * Platform hooks: MBEDTLS_ENTROPY_HARDWARE_ALT + MBEDTLS_NO_PLATFORM_ENTROPY (esp_fill_random),
 *   MBEDTLS_PLATFORM_MS_TIME_ALT (esp_platform_time.c),
 *   MBEDTLS_PLATFORM_STD_CALLOC/FREE = esp_mbedtls_mem_calloc/free -- dropped.
 * Networking/timing: esp_config.h #undef MBEDTLS_NET_C and MBEDTLS_TIMING_C (ESP-IDF uses
 *   its own port/net_sockets.c). Kept defined here because programs/ssl/ssl_client2 needs them.
 * None of these changes which cipher suites / extensions / groups / sig_algs are written. */
#undef  MBEDTLS_AES_ALT
#undef  MBEDTLS_GCM_ALT
#undef  MBEDTLS_SHA1_ALT
#undef  MBEDTLS_SHA256_ALT
#undef  MBEDTLS_SHA512_ALT
#undef  MBEDTLS_MD5_ALT
#undef  MBEDTLS_ENTROPY_HARDWARE_ALT
#undef  MBEDTLS_NO_PLATFORM_ENTROPY
#undef  MBEDTLS_PLATFORM_MS_TIME_ALT
#define MBEDTLS_NET_C                       /* [DROP of esp #undef] needed by ssl_client2 */
#define MBEDTLS_TIMING_C                    /* [DROP of esp #undef] needed by ssl_client2 */
