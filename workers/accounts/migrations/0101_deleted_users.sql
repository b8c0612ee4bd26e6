-- Deleted users: their tokens are revoked at the gateway until they would have expired,
-- and their ids are never registered again.
CREATE TABLE deleted_users (
    id uuid PRIMARY KEY,
    deleted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deleted_users_deleted_at_idx ON deleted_users (deleted_at);
