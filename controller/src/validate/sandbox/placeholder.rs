//! Stand-in files for TLS material a bundle names but does not carry (certificates and keys live on
//! the proxies, not in git). `nginx -t` loads and cross-checks them, so the sandbox needs real,
//! matching PEM; these are a throw-away self-signed EC P-256 pair made once for this purpose,
//! never trusted by anything, with a CRL and DH parameters that go with it.

/// A self-signed CA certificate followed by its private key: serves as `ssl_certificate`,
/// `ssl_certificate_key` (also when both name the same file) and any trusted/client CA list.
pub const CERT_AND_KEY: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIBujCCAV+gAwIBAgIUNFjHwamSPIUuXSxAxjJChMrMJ0YwCgYIKoZIzj0EAwIw\n\
KTEnMCUGA1UEAwwec3dpdGNoYmFjay1zYW5kYm94LXBsYWNlaG9sZGVyMCAXDTI2\n\
MTEyNTEzNDQwMFoYDzIxMjYxMTAxMTM0NDAwWjApMScwJQYDVQQDDB5zd2l0Y2hi\n\
YWNrLXNhbmRib3gtcGxhY2Vob2xkZXIwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC\n\
AASPEPmf105V7Q58IKMNghU/hIQopH6pCnux1ykVlGot4SEr0XtccpYuyPT86QVc\n\
h/+rLm30znjC6Ng3sWIWvBLpo2MwYTAdBgNVHQ4EFgQUN+w0bkkLXYVDIDhhkwYF\n\
I8zobDEwHwYDVR0jBBgwFoAUN+w0bkkLXYVDIDhhkwYFI8zobDEwDgYDVR0PAQH/\n\
BAQDAgGGMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSQAwRgIhAInjkpvD\n\
jL9Vy4AIFWev4o7+eSslxYsRQbf1QaNxjeESAiEAySnbdS8W44pe5/FNWgB3UM0w\n\
ALQf3lysuPMvZEf5Zb0=\n\
-----END CERTIFICATE-----\n\
-----BEGIN EC PRIVATE KEY-----\n\
MHcCAQEEIDCF8sdHF5P8qWu1fKC9QlYQRwT7Fhy/Zobzz9ZXHV89oAoGCCqGSM49\n\
AwEHoUQDQgAEjxD5n9dOVe0OfCCjDYIVP4SEKKR+qQp7sdcpFZRqLeEhK9F7XHKW\n\
Lsj0/OkFXIf/qy5t9M54wujYN7FiFrwS6Q==\n\
-----END EC PRIVATE KEY-----\n\
";

/// A CRL signed by the placeholder CA, for `ssl_crl` and its proxy variants.
pub const CRL: &str = "\
-----BEGIN X509 CRL-----\n\
MIHBMGoCAQEwCgYIKoZIzj0EAwIwKTEnMCUGA1UEAwwec3dpdGNoYmFjay1zYW5k\n\
Ym94LXBsYWNlaG9sZGVyFw0yNjExMjUxMzQ0MDBaGA8yMTI2MTEwMTEzNDQwMFqg\n\
DjAMMAoGA1UdFAQDAgEBMAoGCCqGSM49BAMCA0cAMEQCIFk1G/Z46E3DmnoRkOjo\n\
NHYw2YsYdTrqP/RqY8IvZbWJAiAtXo/hcWMtMNQBJlVPG0rbmsxK6ZCn0xz3iIlk\n\
WPDRIA==\n\
-----END X509 CRL-----\n\
";

/// RFC 7919 ffdhe2048 group, for `ssl_dhparam`.
pub const DH_PARAMS: &str = "\
-----BEGIN DH PARAMETERS-----\n\
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz\n\
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a\n\
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7\n\
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi\n\
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD\n\
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==\n\
-----END DH PARAMETERS-----\n\
";

/// A password file: the placeholder key is not encrypted, nginx only needs a readable line.
pub const PASSWORD: &str = "switchback-sandbox-placeholder\n";

/// `ssl_session_ticket_key` takes exactly 80 (or 48) bytes; the content does not matter here.
pub const TICKET_KEY: [u8; 80] = [0x5a; 80];
