"""Security: the local PKI for TLS on one machine (device and operator identities follow)."""
