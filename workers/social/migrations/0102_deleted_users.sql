-- Users accounts deleted. A deletion wins whatever arrives after it: a post queued
-- before the deletion, a command sent later with a still-valid token, or a
-- user.registered event delivered after the user.deleted event of the same user.
CREATE TABLE deleted_users (
    id uuid PRIMARY KEY,
    deleted_at timestamptz NOT NULL DEFAULT now()
);
