//! Social service: posts, reposts and timelines.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::common::{OperationRef, Page, PageRequest};

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

crate::messages! {
    /// Commands the social worker accepts. The acting user is the envelope's actor.
    pub enum SocialCommand: Command, keys in commands {
        /// Publish a post.
        CreatePost(CreatePost) = POST_CREATE "social.post.create",
        /// Repost an existing post.
        Repost(Repost) = POST_REPOST "social.post.repost",
        /// Delete one's own post.
        DeletePost(PostRef) = POST_DELETE "social.post.delete",
    }
}

impl SocialCommand {
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

crate::messages! {
    /// Queries the social worker answers.
    pub enum SocialQuery: Query, keys in queries {
        /// One post.
        GetPost(PostRef) -> Post = POST_GET "social.post.get",
        /// A user's timeline.
        UserTimeline(UserTimeline) -> Page<Post> = TIMELINE_USER "social.timeline.user",
        /// Everyone's timeline.
        GlobalTimeline(PageRequest) -> Page<Post> = TIMELINE_GLOBAL "social.timeline.global",
        /// The outcome of an operation.
        GetOperation(OperationRef) -> crate::Outcome = OPERATION_GET "social.operation.get",
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

crate::messages! {
    /// Events the social service emits.
    pub enum SocialEvent: Event, keys in events {
        /// A post was published.
        PostCreated(Post) = POST_CREATED "social.post.created",
        /// A post was reposted.
        PostReposted(Post) = POST_REPOSTED "social.post.reposted",
        /// A post was deleted.
        PostDeleted(PostRef) = POST_DELETED "social.post.deleted",
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
