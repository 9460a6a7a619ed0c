//! A Postgres client connection that comes back after Postgres restarts:
//! the side connections ferry keeps (dead letters, NOTIFY) must outlive a
//! database restart as the replication source does.

use anyhow::Context as _;
use std::sync::Arc;
use tokio::sync::Mutex;

/// A lazily (re)connected client.
pub struct Reconnecting {
    /// A connection string (`postgres://…` or `host=… user=…`); it may hold
    /// a password, so it is never logged.
    connection: String,
    /// What the connection is for, in errors and logs.
    purpose: &'static str,
    client: Mutex<Option<Arc<tokio_postgres::Client>>>,
}

impl Reconnecting {
    pub fn new(connection: &str, purpose: &'static str) -> Reconnecting {
        Reconnecting {
            connection: connection.to_string(),
            purpose,
            client: Mutex::new(None),
        }
    }

    /// The open client, connecting first if there is none or it closed.
    pub async fn client(&self) -> anyhow::Result<Arc<tokio_postgres::Client>> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|client| !client.is_closed()) {
            return Ok(client.clone());
        }
        let (client, driver) = tokio_postgres::connect(&self.connection, tokio_postgres::NoTls)
            .await
            .with_context(|| format!("cannot connect to Postgres for {}", self.purpose))?;
        let purpose = self.purpose;
        tokio::spawn(async move {
            if let Err(error) = driver.await {
                tracing::warn!(%error, "The Postgres connection for {purpose} closed; it reconnects at its next use.");
            }
        });
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }
}
