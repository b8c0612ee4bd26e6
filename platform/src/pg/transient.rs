//! The one error type of a PostgreSQL service's handlers: what went wrong and, when
//! PostgreSQL itself refused, its SQLSTATE — which alone decides retry or dead letter.

use tokio_postgres::error::SqlState;

use crate::bus::Disposition;

/// A handler failure that a retry may cure (the database is away, a serialisation
/// conflict…). Rule violations are [`Effect::Rejected`], not errors.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Transient {
    message: String,
    /// PostgreSQL's SQLSTATE, when PostgreSQL itself refused: what decides between retry
    /// and dead letter, never the message text.
    sqlstate: Option<SqlState>,
}

impl Transient {
    /// A failure of our own (not PostgreSQL's) that a retry may cure.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            sqlstate: None,
        }
    }

    /// A failure PostgreSQL reported with `sqlstate`.
    pub fn with_sqlstate(message: impl Into<String>, sqlstate: SqlState) -> Self {
        Self {
            message: message.into(),
            sqlstate: Some(sqlstate),
        }
    }

    /// What went wrong, for logs and the retry reason.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The message, for a retry reason.
    pub fn into_message(self) -> String {
        self.message
    }

    /// What the consumer does about it: retry later, unless PostgreSQL refused the data
    /// itself (SQLSTATE class 22, "data exception": a NUL byte in text, a number out of
    /// range…), which no retry can change — that message is dead-lettered at once.
    pub fn into_disposition(self) -> Disposition {
        if self.is_data_exception() {
            Disposition::Dead(crate::bus::DeadLetter::rejected(self.message))
        } else {
            Disposition::Retry(self.message)
        }
    }

    /// Whether PostgreSQL refused the data itself (SQLSTATE class 22).
    pub fn is_data_exception(&self) -> bool {
        self.sqlstate
            .as_ref()
            .is_some_and(|code| code.code().starts_with("22"))
    }
}

impl crate::bus::QueryFailure for Transient {
    /// Data PostgreSQL refuses will be refused on every retry.
    fn is_permanent(&self) -> bool {
        self.is_data_exception()
    }
}

impl From<tokio_postgres::Error> for Transient {
    fn from(error: tokio_postgres::Error) -> Self {
        Self {
            message: super::describe(&error),
            sqlstate: error.code().cloned(),
        }
    }
}

impl From<deadpool_postgres::PoolError> for Transient {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        let sqlstate = match &error {
            deadpool_postgres::PoolError::Backend(backend) => backend.code().cloned(),
            _ => None,
        };
        Self {
            message: error.to_string(),
            sqlstate,
        }
    }
}

#[cfg(test)]
mod classification {
    use super::*;

    #[test]
    fn data_exceptions_are_dead_lettered_and_everything_else_retried() {
        let nul = Transient::with_sqlstate(
            "ERROR: invalid byte sequence for encoding \"UTF8\": 0x00",
            SqlState::from_code("22021"),
        );
        assert!(matches!(nul.into_disposition(), Disposition::Dead(d) if d.reason == "rejected"));
        let retries = [
            Transient::with_sqlstate(
                "FATAL: terminating connection due to administrator command",
                SqlState::ADMIN_SHUTDOWN,
            ),
            // A message that merely looks like a data exception is not one.
            Transient::new("a text ending in (22021)"),
            Transient::new("claimed but no outcome yet"),
        ];
        for transient in retries {
            let reason = transient.message().to_owned();
            assert!(
                matches!(transient.into_disposition(), Disposition::Retry(_)),
                "{reason}"
            );
        }
    }
}
