-- Users and the keys that sign their tokens.

CREATE TABLE users (
    id uuid PRIMARY KEY,
    email text NOT NULL,
    display_name text NOT NULL,
    password_hash text NOT NULL,
    role text NOT NULL CHECK (role IN ('admin', 'teacher', 'student')),
    created_at timestamptz NOT NULL DEFAULT now()
);
-- E-mail addresses are unique whatever their case.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

-- Ed25519 signing keys; the newest signs, all verify (so a rotation never invalidates
-- tokens already issued). The private key never leaves this database.
CREATE TABLE signing_keys (
    kid text PRIMARY KEY,
    private_der bytea NOT NULL,
    public_x text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
