//! Posts and timelines by request-reply.

use contracts::common::{MAX_PAGE, PageRequest};
use contracts::social::SocialQuery;
use contracts::{QueryReply, Rejection};
use platform::bus::Answer;
use platform::pg::Pool;
use platform::pg::handle::{Transient, find_outcome};
use serde::Serialize;

use crate::store;

/// Handles the social query queue.
pub struct QueryHandler {
    pool: Pool,
}

impl QueryHandler {
    /// A handler reading `pool`.
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

fn page(request: &PageRequest) -> Result<(u32, Option<store::Cursor>), Rejection> {
    if !(1..=MAX_PAGE).contains(&request.limit) {
        return Err(Rejection::invalid(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let cursor = match &request.cursor {
        Some(text) => Some(
            store::Cursor::parse(text).ok_or_else(|| Rejection::invalid("cursor is not valid"))?,
        ),
        None => None,
    };
    Ok((request.limit, cursor))
}

fn ok<T: Serialize>(body: &T) -> QueryReply {
    QueryReply::Ok {
        body: serde_json::to_value(body).unwrap_or_default(),
    }
}

fn rejected(rejection: Rejection) -> QueryReply {
    QueryReply::Rejected { rejection }
}

impl Answer for QueryHandler {
    type Query = SocialQuery;
    type Error = Transient;

    async fn answer(&self, query: SocialQuery) -> Result<QueryReply, Transient> {
        let client = self.pool.get().await?;
        Ok(match query {
            SocialQuery::GetPost(post) => match store::get(&client, post.post_id).await? {
                Some(found) => ok(&found),
                None => rejected(Rejection::not_found(format!(
                    "post {} does not exist",
                    post.post_id
                ))),
            },
            SocialQuery::UserTimeline(timeline) => match page(&timeline.page) {
                Ok((limit, cursor)) => {
                    ok(&store::timeline(&client, Some(timeline.user_id), limit, cursor).await?)
                }
                Err(rejection) => rejected(rejection),
            },
            SocialQuery::GlobalTimeline(request) => match page(&request) {
                Ok((limit, cursor)) => ok(&store::timeline(&client, None, limit, cursor).await?),
                Err(rejection) => rejected(rejection),
            },
            SocialQuery::GetOperation(op) => match find_outcome(&client, op.operation_id).await? {
                Some(outcome) => ok(&outcome),
                None => rejected(Rejection::not_found("no outcome yet")),
            },
        })
    }
}
