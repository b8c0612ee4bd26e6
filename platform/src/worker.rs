//! The runtime of a worker service: its consumers and background tasks, run together
//! until shutdown, then drained.
//!
//! A service registers its handlers explicitly at startup and calls
//! [`Worker::run_until_stopped`]. Consumers ride out broker outages themselves (they
//! resubscribe once the bus has reconnected); should one fail outright all the others
//! are stopped too and the error is returned: a half-alive worker is worse than a restart
//! by the supervisor.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::bus::consumer::{self, ConsumerOptions};
use crate::bus::{Answer, Bus, Handler, Queries};

/// Consumers and tasks of one service.
pub struct Worker {
    bus: Bus,
    service: &'static str,
    grace: Duration,
    work: CancellationToken,
    background_stop: CancellationToken,
    shutdown: CancellationToken,
    consumers: JoinSet<anyhow::Result<()>>,
    background: JoinSet<()>,
}

impl Worker {
    /// The worker of `service` on `bus`; `shutdown` stops it; in-flight messages get
    /// `grace` to finish.
    pub fn new(
        bus: Bus,
        service: &'static str,
        grace: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            bus,
            service,
            grace,
            work: shutdown.child_token(),
            background_stop: CancellationToken::new(),
            shutdown,
            consumers: JoinSet::new(),
            background: JoinSet::new(),
        }
    }

    /// Consumes the service's command queue with `handler`; what cannot be handled is
    /// dead-lettered.
    pub fn commands<H: Handler>(&mut self, handler: H) {
        let queue = self.bus.topology.command_queue(self.service);
        self.consume(queue, true, handler);
    }

    /// Consumes the service's event queue (the events it subscribed to when it declared
    /// its queues) with `handler`; what cannot be handled is dead-lettered.
    pub fn events<H: Handler>(&mut self, handler: H) {
        let queue = self.bus.topology.event_queue(self.service);
        self.consume(queue, true, handler);
    }

    /// Answers the service's query queue with `answers` (decoding, replying and retrying
    /// done by [`Queries`]). Queries have no dead-letter queue: a query that cannot be
    /// answered is answered with a rejection, and one nobody took in time expires.
    pub fn queries<A: Answer>(&mut self, answers: A) {
        let queue = self.bus.topology.query_queue(self.service);
        self.consume(queue, false, Queries(answers));
    }

    /// Consumes `queue` with `handler`. `dead_letters` says whether the queue has a DLQ.
    fn consume<H: Handler>(&mut self, queue: String, dead_letters: bool, handler: H) {
        let options = ConsumerOptions {
            queue,
            dead_letters,
            grace: self.grace,
            retry_pause: Duration::from_millis(500),
        };
        self.consumers.spawn(consumer::run(
            self.bus.clone(),
            options,
            Arc::new(handler),
            self.work.clone(),
        ));
    }

    /// Runs a background task (an outbox relay) that must stop when `token` is cancelled;
    /// it is cancelled only after the consumers have drained.
    pub fn spawn<F, Fut>(&mut self, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.background.spawn(task(self.background_stop.clone()));
    }

    /// Runs until shutdown or a consumer failure, then drains and closes the connection.
    pub async fn run_until_stopped(mut self) -> anyhow::Result<()> {
        let mut result = Ok(());
        while let Some(finished) = self.consumers.join_next().await {
            let outcome = finished.map_err(anyhow::Error::from).and_then(|r| r);
            if let Err(error) = outcome {
                if result.is_ok() {
                    result = Err(error);
                }
                self.work.cancel();
            }
        }
        self.work.cancel();
        // Only now, so events committed by the last drained messages still go out.
        self.background_stop.cancel();
        while self.background.join_next().await.is_some() {}
        self.shutdown.cancel();
        self.bus.close().await;
        result
    }
}
