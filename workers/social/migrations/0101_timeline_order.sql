-- Timelines are ordered by creation time (then id), not by id alone: ids derived from
-- idempotency keys or from events are deterministic, not time-ordered.
DROP INDEX IF EXISTS posts_author_id_idx;
CREATE INDEX posts_author_created_idx ON posts (author_id, created_at DESC, id DESC);
CREATE INDEX posts_created_idx ON posts (created_at DESC, id DESC);
