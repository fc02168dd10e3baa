"""Event signatures: verifying them (`verifier`, through OpenSSL or `ed25519`), signing local events."""

# The names of the two Ed25519 verifiers (`status --json`'s `federation.verifier`, the `noemafed:verifier`
# record), here so that reading a recorded name does not load the verifiers themselves.
OPENSSL, PYTHON = "openssl", "python"
VERIFIER_NAMES = (OPENSSL, PYTHON)
# The environment variable that chooses one (signing.verifier says how).
VERIFIER_ENV = "NOEMAFED_ED25519"
