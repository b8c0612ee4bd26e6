//! Post, repost and delete, exactly once, with their events in the outbox.

use contracts::social::{CreatePost, PostRef, Repost, SocialCommand, SocialEvent};
use contracts::{Envelope, Rejection};
use platform::bus::{DeadLetter, Incoming};
use platform::pg::Transaction;
use platform::pg::handle::{Apply, Effect, Transient, TxFuture};

use super::{actor, emit};
use crate::metrics::SocialMetrics;
use crate::store;

/// The social command queue's rules, run by [`platform::pg::handle::Batched`].
pub struct CommandHandler {
    actors: platform::actor::ActorKey,
    metrics: SocialMetrics,
}

impl CommandHandler {
    /// Rules that accept only actors vouched for with `actors` and count what they
    /// applied in `metrics`.
    pub fn new(actors: platform::actor::ActorKey, metrics: SocialMetrics) -> Self {
        Self { actors, metrics }
    }
}

impl Apply for CommandHandler {
    type Message = SocialCommand;

    fn accept(&self, incoming: &Incoming) -> Result<SocialCommand, DeadLetter> {
        self.actors.decode(incoming)
    }

    fn apply<'t>(
        &'t self,
        tx: &'t Transaction<'t>,
        envelope: &'t Envelope,
        command: &'t SocialCommand,
    ) -> TxFuture<'t> {
        Box::pin(async move {
            if let Err(detail) = command.validate() {
                return Ok(Effect::Rejected(Rejection::invalid(detail)));
            }
            match command {
                SocialCommand::CreatePost(post) => create(tx, envelope, post).await,
                SocialCommand::Repost(repost) => repost_post(tx, envelope, repost).await,
                SocialCommand::DeletePost(post) => delete(tx, envelope, post).await,
            }
        })
    }

    fn committed(&self, command: &SocialCommand, effect: &Effect) {
        if effect.is_applied() {
            match command {
                SocialCommand::CreatePost(_) => {
                    self.metrics.posts.inc();
                }
                SocialCommand::Repost(_) => {
                    self.metrics.reposts.inc();
                }
                SocialCommand::DeletePost(_) => {}
            }
        }
    }
}

fn no_actor() -> Effect {
    Effect::Rejected(Rejection::forbidden("posting needs an authenticated user"))
}

fn deleted_actor(author: uuid::Uuid) -> Effect {
    Effect::Rejected(Rejection::forbidden(format!(
        "user {author} was deleted and can no longer post"
    )))
}

// A deleted user must not come back through a post queued before the deletion or sent
// with a token issued before it. The author row is written first and the tombstone read
// after: if the deletion committed first, the tombstone is visible and the transaction
// rolls back; if it is still running, the post's foreign key waits for it and fails (a
// transient error: the retry sees the tombstone); if this transaction commits first, the
// deletion's cascade removes what it wrote.

async fn create(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    post: &CreatePost,
) -> Result<Effect, Transient> {
    let Some(author) = actor(envelope) else {
        return Ok(no_actor());
    };
    store::upsert_author(tx, author, &post.author_name, None).await?;
    if store::is_deleted(tx, author).await? {
        return Ok(deleted_actor(author));
    }
    store::insert_post(tx, post.post_id, author, &post.body, None).await?;
    let Some(created) = store::get(tx, post.post_id).await? else {
        return Err(Transient::new("post vanished inside its own transaction"));
    };
    emit(tx, envelope, &SocialEvent::PostCreated(created.clone())).await?;
    Ok(Effect::applied(&created))
}

async fn repost_post(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    repost: &Repost,
) -> Result<Effect, Transient> {
    let Some(author) = actor(envelope) else {
        return Ok(no_actor());
    };
    let Some(original) = store::get(tx, repost.original_id).await? else {
        return Ok(Effect::Rejected(Rejection::not_found(format!(
            "post {} does not exist",
            repost.original_id
        ))));
    };
    // A repost of a repost counts for the original, like everywhere else.
    let root = original.repost_of.unwrap_or(original.id);
    store::upsert_author(tx, author, &repost.author_name, None).await?;
    if store::is_deleted(tx, author).await? {
        return Ok(deleted_actor(author));
    }
    if !store::insert_post(tx, repost.post_id, author, &original.body, Some(root)).await? {
        return Ok(Effect::Rejected(Rejection::conflict(format!(
            "you already reposted post {root}"
        ))));
    }
    let Some(created) = store::get(tx, repost.post_id).await? else {
        return Err(Transient::new("repost vanished inside its own transaction"));
    };
    emit(tx, envelope, &SocialEvent::PostReposted(created.clone())).await?;
    Ok(Effect::applied(&created))
}

async fn delete(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    target: &PostRef,
) -> Result<Effect, Transient> {
    let Some(actor) = actor(envelope) else {
        return Ok(no_actor());
    };
    let Some(post) = store::get(tx, target.post_id).await? else {
        return Ok(Effect::Rejected(Rejection::not_found(format!(
            "post {} does not exist",
            target.post_id
        ))));
    };
    if post.author_id != actor {
        return Ok(Effect::Rejected(Rejection::forbidden(
            "you can delete only your own posts",
        )));
    }
    store::delete_post(tx, target.post_id).await?;
    emit(tx, envelope, &SocialEvent::PostDeleted(target.clone())).await?;
    Ok(Effect::Applied(None))
}
