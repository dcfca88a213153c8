"""Signed tokens: intentwatch's keyring, grant tokens (JWS) and revocation tokens (SETs)."""
