//! SQL for authors, posts and timelines.

use chrono::{DateTime, Utc};
use contracts::common::Page;
use contracts::social::Post;
use platform::pg::{GenericClient, prepared};
use tokio_postgres::{Error, Row};
use uuid::Uuid;

/// The columns [`post`] reads, as a literal so statements can be built with `concat!`.
macro_rules! post_columns {
    () => {
        "p.id, p.author_id, a.display_name, p.body, p.repost_of, p.created_at,
         (SELECT count(*) FROM posts r WHERE r.repost_of = p.id)"
    };
}

fn post(row: &Row) -> Post {
    Post {
        id: row.get(0),
        author_id: row.get(1),
        author_name: row.get(2),
        body: row.get(3),
        repost_of: row.get(4),
        created_at: row.get(5),
        repost_count: row.get(6),
    }
}

/// Creates or renames an author; `role` is kept when not given.
///
/// Written as insert-if-absent plus an update only when something changed: an
/// `ON CONFLICT DO UPDATE` would lock the author's row for every post, serialising all
/// of a busy author's posts behind each other.
pub async fn upsert_author<C: GenericClient + Sync>(
    client: &C,
    id: Uuid,
    display_name: &str,
    role: Option<&str>,
) -> Result<(), Error> {
    let inserted = prepared::execute(client,
            "INSERT INTO authors (id, display_name, role) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
            &[&id, &display_name, &role],
        )
        .await?;
    if inserted == 0 {
        prepared::execute(client,
                "UPDATE authors SET display_name = $2, role = COALESCE($3, role), updated_at = now()
                 WHERE id = $1
                   AND (display_name IS DISTINCT FROM $2 OR ($3::text IS NOT NULL AND role IS DISTINCT FROM $3))",
                &[&id, &display_name, &role],
            )
            .await?;
    }
    Ok(())
}

/// An author's role, if the author is known.
pub async fn author_role<C: GenericClient + Sync>(
    client: &C,
    id: Uuid,
) -> Result<Option<Option<String>>, Error> {
    Ok(
        prepared::query_opt(client, "SELECT role FROM authors WHERE id = $1", &[&id])
            .await?
            .map(|row| row.get(0)),
    )
}

/// Records that a user was deleted (idempotent).
pub async fn tombstone<C: GenericClient + Sync>(client: &C, id: Uuid) -> Result<(), Error> {
    prepared::execute(
        client,
        "INSERT INTO deleted_users (id) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&id],
    )
    .await?;
    Ok(())
}

/// Whether a user was deleted. Read after writing the author row: a deletion running
/// concurrently either is visible here (committed first) or, through the posts' foreign
/// key, removes what this transaction writes (see `handlers::commands`).
pub async fn is_deleted<C: GenericClient + Sync>(client: &C, id: Uuid) -> Result<bool, Error> {
    Ok(
        prepared::query_opt(client, "SELECT 1 FROM deleted_users WHERE id = $1", &[&id])
            .await?
            .is_some(),
    )
}

/// Deletes an author with all their posts (and the reposts of those).
pub async fn delete_author<C: GenericClient + Sync>(client: &C, id: Uuid) -> Result<u64, Error> {
    prepared::execute(client, "DELETE FROM authors WHERE id = $1", &[&id]).await
}

/// Inserts a post; `Ok(false)` if this author already reposted the original.
pub async fn insert_post<C: GenericClient + Sync>(
    client: &C,
    id: Uuid,
    author: Uuid,
    body: &str,
    repost_of: Option<Uuid>,
) -> Result<bool, Error> {
    let result = prepared::execute(
        client,
        "INSERT INTO posts (id, author_id, body, repost_of) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO NOTHING",
        &[&id, &author, &body, &repost_of],
    )
    .await;
    match result {
        Ok(_) => Ok(true),
        Err(error)
            if platform::pg::is_unique_violation(&error, Some("posts_one_repost_per_user")) =>
        {
            Ok(false)
        }
        Err(error) => Err(error),
    }
}

/// One post.
pub async fn get<C: GenericClient + Sync>(client: &C, id: Uuid) -> Result<Option<Post>, Error> {
    const SQL: &str = concat!(
        "SELECT ",
        post_columns!(),
        " FROM posts p JOIN authors a ON a.id = p.author_id WHERE p.id = $1"
    );
    Ok(prepared::query_opt(client, SQL, &[&id])
        .await?
        .as_ref()
        .map(post))
}

/// Deletes a post (and its reposts).
pub async fn delete_post<C: GenericClient + Sync>(client: &C, id: Uuid) -> Result<bool, Error> {
    Ok(prepared::execute(client, "DELETE FROM posts WHERE id = $1", &[&id]).await? == 1)
}

/// Where a page of a timeline starts: after this post (creation time, then id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Creation time of the last post of the previous page.
    pub created_at: DateTime<Utc>,
    /// Its id.
    pub id: Uuid,
}

impl Cursor {
    /// Parses `<microseconds since the epoch>_<uuid>`.
    pub fn parse(text: &str) -> Option<Self> {
        let (micros, id) = text.split_once('_')?;
        let created_at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        Some(Self {
            created_at,
            id: Uuid::parse_str(id).ok()?,
        })
    }

    fn of(post: &Post) -> String {
        format!("{}_{}", post.created_at.timestamp_micros(), post.id)
    }
}

/// Newest first (by creation time, then id), after `cursor`, optionally one author's.
pub async fn timeline<C: GenericClient + Sync>(
    client: &C,
    author: Option<Uuid>,
    limit: u32,
    cursor: Option<Cursor>,
) -> Result<Page<Post>, Error> {
    let take = i64::from(limit) + 1;
    let (after_time, after_id) = match cursor {
        Some(c) => (Some(c.created_at), Some(c.id)),
        None => (None, None),
    };
    const SQL: &str = concat!(
        "SELECT ",
        post_columns!(),
        " FROM posts p JOIN authors a ON a.id = p.author_id
         WHERE ($1::uuid IS NULL OR p.author_id = $1)
           AND ($2::timestamptz IS NULL OR (p.created_at, p.id) < ($2, $3::uuid))
         ORDER BY p.created_at DESC, p.id DESC LIMIT $4"
    );
    let rows = prepared::query(client, SQL, &[&author, &after_time, &after_id, &take]).await?;
    let mut items: Vec<Post> = rows.iter().map(post).collect();
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(Cursor::of)
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_garbage_is_refused() {
        let post = Post {
            id: Uuid::now_v7(),
            author_id: Uuid::nil(),
            author_name: "a".into(),
            body: "b".into(),
            repost_of: None,
            repost_count: 0,
            created_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
        };
        let cursor = Cursor::parse(&Cursor::of(&post)).unwrap();
        assert_eq!(
            cursor,
            Cursor {
                created_at: post.created_at,
                id: post.id
            }
        );
        for bad in ["", "123", "x_y", "123_not-a-uuid"] {
            assert!(Cursor::parse(bad).is_none(), "{bad}");
        }
    }
}
