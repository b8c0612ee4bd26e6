-- Authors, posts and reposts.

-- Everyone who can appear on a timeline: users (learnt from accounts' events or from
-- their own posts) and the system author of announcements.
CREATE TABLE authors (
    id uuid PRIMARY KEY,
    display_name text NOT NULL,
    -- From accounts.user.registered; NULL until that event arrives.
    role text,
    updated_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO authors (id, display_name, role)
VALUES ('00000000-0000-0000-0000-000000000000', 'Switchyard', 'system');

-- Posts and reposts (a repost is a post that points at the original and copies its
-- text). Deleting an author deletes their posts; deleting a post deletes its reposts.
CREATE TABLE posts (
    id uuid PRIMARY KEY,
    author_id uuid NOT NULL REFERENCES authors (id) ON DELETE CASCADE,
    body text NOT NULL CHECK (char_length(body) BETWEEN 1 AND 280),
    repost_of uuid REFERENCES posts (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT posts_one_repost_per_user UNIQUE (author_id, repost_of)
);

CREATE INDEX posts_author_id_idx ON posts (author_id, id DESC);
CREATE INDEX posts_repost_of_idx ON posts (repost_of);
