-- Private keys are stored sealed (see src/vault.rs), never in the clear; accounts seals
-- any key it finds in the clear when it starts.
COMMENT ON COLUMN signing_keys.private_der IS
    'PKCS#8 Ed25519 private key sealed under the key-encryption key (format SYK1)';
