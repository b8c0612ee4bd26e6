//! Resources of one test, removed when it ends — also when it fails, since a panic
//! unwinds through `Drop`.

use crate::{broker, env, pg, unique_name};

/// One test's name and what it created under it: the broker's queues and exchanges
/// under the prefix, the MongoDB database of that name, and the PostgreSQL databases it
/// asked for. Dropping it removes them all.
pub struct Scratch {
    name: String,
    databases: Vec<String>,
    mongo: bool,
}

impl Scratch {
    /// A fresh name; nothing exists under it yet.
    pub fn new() -> Self {
        Self {
            name: unique_name(),
            databases: Vec::new(),
            mongo: false,
        }
    }

    /// The name: the queue prefix, and the MongoDB database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates the PostgreSQL database `<name>_<suffix>` and returns its name.
    pub async fn database(&mut self, suffix: &str) -> String {
        let database = format!("{}_{suffix}", self.name);
        pg::admin(&format!("CREATE DATABASE {database}")).await;
        self.databases.push(database.clone());
        database
    }

    /// Marks the MongoDB database of this name as the test's, to drop at the end.
    pub fn uses_mongo(&mut self) {
        self.mongo = true;
    }

    async fn clean(name: String, databases: Vec<String>, mongo: bool) {
        broker::delete_objects(&name).await;
        if mongo && let Ok(client) = mongodb::Client::with_uri_str(env::mongo_url()).await {
            let _ = client.database(&name).drop().await;
        }
        for database in databases {
            pg::admin(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")).await;
        }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let (name, databases, mongo) = (
            self.name.clone(),
            std::mem::take(&mut self.databases),
            self.mongo,
        );
        // Drop cannot await, and the test's runtime may be the one dropping: the clean-up
        // runs on a runtime (and clients) of its own in a helper thread.
        let done = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(Self::clean(name, databases, mongo));
        })
        .join();
        if done.is_err() && !std::thread::panicking() {
            panic!("cleaning up after the test failed");
        }
    }
}
