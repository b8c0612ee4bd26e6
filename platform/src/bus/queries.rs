//! The query-service shell: one [`Handler`] for every service's query queue, so decoding,
//! replying, retries and permanent failures are handled the same way everywhere and a
//! service writes only its answers.

use std::fmt::Display;
use std::future::Future;

use contracts::{Message, QueryReply, Rejection};

use super::{Disposition, Handler, Incoming, decode};

/// A handler failure while answering; most are worth another try within the caller's
/// deadline (a query nobody answered in time expires from its queue by itself).
pub trait QueryFailure: Display + Send {
    /// Whether every retry would fail the same way (the database refused the data
    /// itself): then the caller is answered with a rejection at once.
    fn is_permanent(&self) -> bool {
        false
    }
}

/// A service's answers to its queries.
pub trait Answer: Send + Sync + 'static {
    /// The service's query enum.
    type Query: Message;
    /// Why an answer could not be given.
    type Error: QueryFailure;

    /// The reply to `query`: its body, or a rejection (not found, invalid…).
    fn answer(
        &self,
        query: Self::Query,
    ) -> impl Future<Output = Result<QueryReply, Self::Error>> + Send;
}

/// Runs an [`Answer`] on a query queue.
pub struct Queries<A>(pub A);

impl<A: Answer> Handler for Queries<A> {
    async fn handle(&self, incoming: Incoming) -> Disposition {
        // A query that cannot be read is the caller's mistake: tell them, don't retry.
        let query = match decode::<A::Query>(&incoming) {
            Ok(query) => query,
            Err(reason) => return reply(&rejected(reason.error)),
        };
        match self.0.answer(query).await {
            Ok(answer) => reply(&answer),
            Err(failure) if failure.is_permanent() => reply(&rejected(failure.to_string())),
            Err(failure) => Disposition::Retry(failure.to_string()),
        }
    }
}

fn rejected(detail: String) -> QueryReply {
    QueryReply::Rejected {
        rejection: Rejection::invalid(detail),
    }
}

fn reply(reply: &QueryReply) -> Disposition {
    Disposition::Done {
        reply: serde_json::to_vec(reply).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contracts::Envelope;
    use contracts::social::{PostRef, SocialQuery};

    /// Answers every query with how it was told to fail, or with the query itself.
    struct Scripted(Option<Failure>);

    #[derive(Clone, Copy)]
    enum Failure {
        Transient,
        Permanent,
    }

    struct Failed(Failure);

    impl Display for Failed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("it failed")
        }
    }

    impl QueryFailure for Failed {
        fn is_permanent(&self) -> bool {
            matches!(self.0, Failure::Permanent)
        }
    }

    impl Answer for Scripted {
        type Query = SocialQuery;
        type Error = Failed;

        async fn answer(&self, query: SocialQuery) -> Result<QueryReply, Failed> {
            match self.0 {
                Some(failure) => Err(Failed(failure)),
                None => Ok(QueryReply::Ok {
                    body: serde_json::to_value(&query).unwrap_or_default(),
                }),
            }
        }
    }

    fn incoming(query: &SocialQuery) -> Incoming {
        Incoming {
            envelope: Envelope::new(query.routing_key(), 1, uuid::Uuid::now_v7()),
            routing_key: query.routing_key().to_owned(),
            body: serde_json::to_vec(query).unwrap(),
            reply_to: Some("amq.rabbitmq.reply-to".into()),
            redelivered: false,
            span: tracing::Span::none(),
        }
    }

    fn replied(disposition: Disposition) -> QueryReply {
        match disposition {
            Disposition::Done { reply: Some(body) } => serde_json::from_slice(&body).unwrap(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn get_post() -> SocialQuery {
        SocialQuery::GetPost(PostRef {
            post_id: uuid::Uuid::now_v7(),
        })
    }

    #[tokio::test]
    async fn an_answer_is_replied_and_a_transient_failure_retried() {
        let query = get_post();
        let answered = Queries(Scripted(None)).handle(incoming(&query)).await;
        assert!(
            matches!(replied(answered), QueryReply::Ok { body } if body["type"] == "social.post.get")
        );
        let retried = Queries(Scripted(Some(Failure::Transient)))
            .handle(incoming(&query))
            .await;
        assert!(matches!(retried, Disposition::Retry(reason) if reason == "it failed"));
    }

    #[tokio::test]
    async fn unreadable_queries_and_permanent_failures_are_rejected_at_once() {
        let mut garbled = incoming(&get_post());
        garbled.body = b"{\"type\":\"social.post.get\"}".to_vec();
        let mut wrong_version = incoming(&get_post());
        wrong_version.envelope.schema_version = 99;
        for message in [garbled, wrong_version] {
            let disposition = Queries(Scripted(None)).handle(message).await;
            assert!(matches!(replied(disposition), QueryReply::Rejected { .. }));
        }
        let permanent = Queries(Scripted(Some(Failure::Permanent)))
            .handle(incoming(&get_post()))
            .await;
        assert!(
            matches!(replied(permanent), QueryReply::Rejected { rejection } if rejection.detail == "it failed")
        );
    }
}
