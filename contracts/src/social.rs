//! Social service: posts, reposts and timelines.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::catalog::{OperationRef, PageRequest};

/// Name of the service, used for queue names.
pub const SERVICE: &str = "social";

/// Current schema version of every social message.
pub const SCHEMA_VERSION: u32 = 1;

/// Longest post, in characters.
pub const MAX_POST_LEN: usize = 280;

/// Author of announcements that have no teacher to speak for them.
pub const SYSTEM_AUTHOR: Uuid = Uuid::nil();
/// Display name of [`SYSTEM_AUTHOR`].
pub const SYSTEM_AUTHOR_NAME: &str = "Switchyard";

/// Routing keys of social commands.
pub mod commands {
    /// Publish a post.
    pub const POST_CREATE: &str = "social.post.create";
    /// Repost an existing post.
    pub const POST_REPOST: &str = "social.post.repost";
    /// Delete one's own post.
    pub const POST_DELETE: &str = "social.post.delete";
    /// Every command key.
    pub const ALL: [&str; 3] = [POST_CREATE, POST_REPOST, POST_DELETE];
}

/// Routing keys of social events.
pub mod events {
    /// A post was published.
    pub const POST_CREATED: &str = "social.post.created";
    /// A post was reposted.
    pub const POST_REPOSTED: &str = "social.post.reposted";
    /// A post was deleted.
    pub const POST_DELETED: &str = "social.post.deleted";
}

/// Routing keys of social queries.
pub mod queries {
    /// One post.
    pub const POST_GET: &str = "social.post.get";
    /// A user's timeline.
    pub const TIMELINE_USER: &str = "social.timeline.user";
    /// Everyone's timeline.
    pub const TIMELINE_GLOBAL: &str = "social.timeline.global";
    /// The outcome of an operation.
    pub const OPERATION_GET: &str = "social.operation.get";
    /// Every query key.
    pub const ALL: [&str; 4] = [POST_GET, TIMELINE_USER, TIMELINE_GLOBAL, OPERATION_GET];
}

/// Commands the social worker accepts. The acting user is the envelope's actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum SocialCommand {
    /// See [`commands::POST_CREATE`].
    #[serde(rename = "social.post.create")]
    CreatePost(CreatePost),
    /// See [`commands::POST_REPOST`].
    #[serde(rename = "social.post.repost")]
    Repost(Repost),
    /// See [`commands::POST_DELETE`].
    #[serde(rename = "social.post.delete")]
    DeletePost(PostRef),
}

impl SocialCommand {
    /// The routing key this command travels under.
    pub fn routing_key(&self) -> &'static str {
        match self {
            Self::CreatePost(_) => commands::POST_CREATE,
            Self::Repost(_) => commands::POST_REPOST,
            Self::DeletePost(_) => commands::POST_DELETE,
        }
    }

    /// Checks the fields; an error is a permanent rejection.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::CreatePost(post) => validate_post(&post.body),
            Self::Repost(_) | Self::DeletePost(_) => Ok(()),
        }
    }
}

/// Checks a post's text: not blank, at most [`MAX_POST_LEN`] characters.
pub fn validate_post(body: &str) -> Result<(), String> {
    if crate::text::is_blank(body) {
        return Err("body must not be blank (invisible characters count as blank)".into());
    }
    if body.contains('\0') {
        return Err("body must not contain NUL characters".into());
    }
    if body.chars().count() > MAX_POST_LEN {
        return Err(format!("body must be at most {MAX_POST_LEN} characters"));
    }
    Ok(())
}

/// Body of `social.post.create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePost {
    /// Id chosen by the gateway.
    pub post_id: Uuid,
    /// Author's display name, from their token, so a post never waits for the
    /// registration event to arrive.
    pub author_name: String,
    /// Text.
    pub body: String,
}

/// Body of `social.post.repost`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Repost {
    /// Id of the new repost, chosen by the gateway.
    pub post_id: Uuid,
    /// The post being reposted.
    pub original_id: Uuid,
    /// Reposter's display name.
    pub author_name: String,
}

/// Names one post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostRef {
    /// The post.
    pub post_id: Uuid,
}

/// Queries the social worker answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum SocialQuery {
    /// See [`queries::POST_GET`].
    #[serde(rename = "social.post.get")]
    GetPost(PostRef),
    /// See [`queries::TIMELINE_USER`].
    #[serde(rename = "social.timeline.user")]
    UserTimeline(UserTimeline),
    /// See [`queries::TIMELINE_GLOBAL`].
    #[serde(rename = "social.timeline.global")]
    GlobalTimeline(PageRequest),
    /// See [`queries::OPERATION_GET`].
    #[serde(rename = "social.operation.get")]
    GetOperation(OperationRef),
}

impl SocialQuery {
    /// The routing key this query travels under.
    pub fn routing_key(&self) -> &'static str {
        match self {
            Self::GetPost(_) => queries::POST_GET,
            Self::UserTimeline(_) => queries::TIMELINE_USER,
            Self::GlobalTimeline(_) => queries::TIMELINE_GLOBAL,
            Self::GetOperation(_) => queries::OPERATION_GET,
        }
    }
}

/// Body of `social.timeline.user`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserTimeline {
    /// Whose posts and reposts.
    pub user_id: Uuid,
    /// Paging.
    pub page: PageRequest,
}

/// A post or repost as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Post {
    /// Id.
    pub id: Uuid,
    /// Who posted (or reposted) it.
    pub author_id: Uuid,
    /// Their display name.
    pub author_name: String,
    /// Text (for a repost, the original's).
    pub body: String,
    /// The reposted post, for a repost.
    pub repost_of: Option<Uuid>,
    /// How often this post was reposted.
    pub repost_count: i64,
    /// When it was posted.
    pub created_at: DateTime<Utc>,
}

/// Events the social service emits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum SocialEvent {
    /// See [`events::POST_CREATED`].
    #[serde(rename = "social.post.created")]
    PostCreated(Post),
    /// See [`events::POST_REPOSTED`].
    #[serde(rename = "social.post.reposted")]
    PostReposted(Post),
    /// See [`events::POST_DELETED`].
    #[serde(rename = "social.post.deleted")]
    PostDeleted(PostRef),
}

impl SocialEvent {
    /// The routing key this event travels under.
    pub fn routing_key(&self) -> &'static str {
        match self {
            Self::PostCreated(_) => events::POST_CREATED,
            Self::PostReposted(_) => events::POST_REPOSTED,
            Self::PostDeleted(_) => events::POST_DELETED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_serialise_with_their_routing_key_as_type() {
        let id = Uuid::nil();
        let commands = [
            SocialCommand::CreatePost(CreatePost {
                post_id: id,
                author_name: "A".into(),
                body: "hi".into(),
            }),
            SocialCommand::Repost(Repost {
                post_id: id,
                original_id: id,
                author_name: "A".into(),
            }),
            SocialCommand::DeletePost(PostRef { post_id: id }),
        ];
        for command in &commands {
            assert_eq!(
                serde_json::to_value(command).unwrap()["type"],
                command.routing_key()
            );
        }
        let page = PageRequest {
            limit: 1,
            cursor: None,
        };
        let queries = [
            SocialQuery::GetPost(PostRef { post_id: id }),
            SocialQuery::UserTimeline(UserTimeline {
                user_id: id,
                page: page.clone(),
            }),
            SocialQuery::GlobalTimeline(page),
            SocialQuery::GetOperation(OperationRef { operation_id: id }),
        ];
        for query in &queries {
            assert_eq!(
                serde_json::to_value(query).unwrap()["type"],
                query.routing_key()
            );
        }
        let keys: Vec<_> = queries.iter().map(SocialQuery::routing_key).collect();
        assert_eq!(keys, queries::ALL);
    }

    #[test]
    fn posts_are_at_most_280_characters_and_not_blank() {
        assert!(validate_post("hello").is_ok());
        assert!(validate_post(&"é".repeat(280)).is_ok());
        assert!(validate_post(&"é".repeat(281)).is_err());
        assert!(validate_post("  \n").is_err());
    }
}
