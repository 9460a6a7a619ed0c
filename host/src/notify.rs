//! The completion signal: after outputs are delivered, `NOTIFY <channel>,
//! '<payload>'` on a Postgres database, so a request handler that LISTENs
//! gets read-after-write (seed 000, "Immediate Write Visibility with
//! Asynchronous Messaging").
//!
//! The notification for an event is sent only after its outputs in the
//! slice are acknowledged by the receiver, never before; a replay after a
//! crash may notify twice (listeners compare payloads, as the seed says).

use crate::config::Problem;
use crate::pg::Reconnecting;
use crate::sinks::Delivery;
use crate::template::Template;
use anyhow::Context as _;
use serde::Deserialize;

/// `notify = { connection = "…", channel = "…", payload = "{after:id}" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// The database listeners are on, usually the source's.
    pub connection: String,
    /// The channel (any string; quoted, so case and punctuation are kept).
    pub channel: String,
    /// What to send, as a template over the event (see `template`);
    /// default `{position}`. For an outbox, `{after:id}` is the event id.
    #[serde(default = "default_payload")]
    pub payload: String,
}

fn default_payload() -> String {
    "{position}".into()
}

impl NotifyConfig {
    /// Problems that types alone cannot catch; paths relative to `notify`.
    pub(crate) fn check(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.channel.is_empty() {
            problems.push(Problem {
                path: "channel".into(),
                message: "must not be empty".into(),
            });
        }
        if let Err(error) = Template::parse(&self.payload) {
            problems.push(Problem {
                path: "payload".into(),
                message: error,
            });
        }
        problems
    }
}

/// Sends completion notifications.
pub struct Notifier {
    postgres: Reconnecting,
    channel: String,
    payload: Template,
}

impl Notifier {
    pub fn new(config: &NotifyConfig) -> anyhow::Result<Notifier> {
        let payload = Template::parse(&config.payload)
            .map_err(|error| anyhow::anyhow!("notify.payload: {error}"))?;
        Ok(Notifier {
            postgres: Reconnecting::new(&config.connection, "notifications"),
            channel: config.channel.clone(),
            payload,
        })
    }

    /// The payload announcing `delivery`, or why its event has none (a
    /// permanent failure: checked before the output is sent).
    pub fn payload(&self, delivery: &Delivery) -> anyhow::Result<String> {
        self.payload
            .render(&delivery.event)
            .map_err(|error| anyhow::anyhow!("cannot build the notify payload: {error}"))
    }

    /// Sends `payloads`, in order, in one round trip.
    pub async fn send(&self, payloads: &[String]) -> anyhow::Result<()> {
        if payloads.is_empty() {
            return Ok(());
        }
        self.postgres
            .client()
            .await?
            .execute(
                "SELECT pg_notify($1, payload) FROM unnest($2::text[]) WITH ORDINALITY AS t(payload, n) ORDER BY n",
                &[&self.channel, &payloads],
            )
            .await
            .with_context(|| format!("cannot NOTIFY channel {:?}", self.channel))?;
        Ok(())
    }
}
