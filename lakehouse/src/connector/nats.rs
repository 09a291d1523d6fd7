//! `kind: nats`: a NATS JetStream stream read through a durable pull consumer, one micro-batch a run,
//! acknowledged after its commit.
//!
//! A run connects, finds the stream and the durable consumer (created on the first run: explicit acks,
//! `ack_wait`, the subject filter, room for two batches unacknowledged), pulls one batch (`batch.max_records`,
//! `batch.max_bytes`, waiting at most `batch.max_wait`), archives it as one unit and returns it; ingest commits
//! it, then [`Connector::acknowledge`] acknowledges each message and flushes. A run that fails, or a process that
//! dies, acknowledges nothing: the server delivers those messages again once `ack_wait` has passed.
//!
//! **Exactly once.** A message's stream sequence is its identity. The position committed with a batch lists the
//! sequences committed and possibly not acknowledged (ranges): those of the batch and those of earlier batches
//! above the consumer's ack floor (every message at or below it is acknowledged, and never delivered again). A
//! message delivered again whose sequence is listed is acknowledged without being landed again.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use futures::StreamExt;
use serde_json::Value;
use url::Url;

use super::archive::Archive;
use super::stream::{self, Batch};
use super::{Connector, ConnectorError, FileEntry, Polled};
use crate::ingest::LedgerRow;
use crate::manifest::{NatsConnector as Spec, SourceManifest};

/// Sequence ranges, inclusive, sorted and merged.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    pub fn contains(&self, n: u64) -> bool {
        let i = self.0.partition_point(|(_, end)| *end < n);
        self.0.get(i).is_some_and(|(start, _)| *start <= n)
    }

    pub fn insert(&mut self, n: u64) {
        let i = self.0.partition_point(|(_, end)| end.saturating_add(1) < n);
        match self.0.get_mut(i) {
            Some((start, end)) if *start <= n.saturating_add(1) => {
                *start = (*start).min(n);
                *end = (*end).max(n);
                // The range may now touch the next one.
                if let Some(&(next_start, next_end)) = self.0.get(i + 1)
                    && next_start <= self.0[i].1.saturating_add(1)
                {
                    self.0[i].1 = self.0[i].1.max(next_end);
                    self.0.remove(i + 1);
                }
            }
            _ => self.0.insert(i, (n, n)),
        }
    }

    /// Forgets the sequences at or below `floor`.
    pub fn above(mut self, floor: u64) -> Self {
        self.0.retain(|(_, end)| *end > floor);
        if let Some(first) = self.0.first_mut() {
            first.0 = first.0.max(floor + 1);
        }
        self
    }
}

/// The position of a committed batch.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Position {
    /// Sequences committed and perhaps not acknowledged.
    committed: Ranges,
}

/// A batch received and not yet acknowledged.
struct Pending {
    client: async_nats::Client,
    ackers: Vec<jetstream::message::Acker>,
}

pub struct NatsSource {
    spec: Spec,
    name: String,
    consumer: String,
    options: Options,
    archive: Archive,
    max_record_bytes: u64,
    pending: tokio::sync::Mutex<Option<Pending>>,
}

/// Credentials and trust, read from the environment when the connector is built.
struct Options {
    token: Option<String>,
    user: Option<(String, String)>,
    ca_file: Option<String>,
}

impl Options {
    fn from_env(spec: &Spec) -> Result<Self, ConnectorError> {
        let token = spec.token_env.as_deref().map(|v| super::secret(v, "token_env")).transpose()?;
        let user = match (&spec.username_env, &spec.password_env) {
            (Some(u), Some(p)) => Some((super::secret(u, "username_env")?, super::secret(p, "password_env")?)),
            _ => None,
        };
        let ca_file = spec.ca_file_env.as_deref().map(|v| super::secret(v, "ca_file_env")).transpose()?;
        Ok(Self { token, user, ca_file })
    }
}

async fn connect(spec: &Spec, o: &Options, name: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
    let timeout = spec.timeout.0;
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("lakehouse {name}"))
        .connection_timeout(timeout)
        .request_timeout(Some(timeout))
        .ignore_discovered_servers();
    if let Some(token) = &o.token {
        options = options.token(token.clone());
    }
    if let Some((user, password)) = &o.user {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if spec.url.starts_with("tls:") {
        options = options.require_tls(true);
        if let Some(ca) = &o.ca_file {
            options = options.add_root_certificates(ca.into());
        }
    }
    options.connect(spec.url.as_str()).await
}

/// Publishes payloads to `subject` and waits for JetStream to store each (at most `window` waiting at a time);
/// creates the stream (file storage, subjects `<stream>.>` or the manifest's subject filter) when it does not
/// exist. For `lakehouse feed` (demonstrations, tests and benchmarks).
pub async fn publish(spec: &Spec, subject: &str, payloads: Vec<Vec<u8>>, window: usize) -> Result<(), String> {
    let options = Options::from_env(spec).map_err(|e| e.to_string())?;
    let client = connect(spec, &options, "feed").await.map_err(|e| format!("{}: cannot connect: {e}", spec.url))?;
    let js = jetstream::new(client.clone());
    let subjects = vec![spec.subject.clone().unwrap_or_else(|| format!("{}.>", spec.stream))];
    js.get_or_create_stream(jetstream::stream::Config { name: spec.stream.clone(), subjects, ..Default::default() })
        .await
        .map_err(|e| format!("stream `{}`: {e}", spec.stream))?;
    let mut waiting = std::collections::VecDeque::new();
    for payload in payloads {
        if waiting.len() >= window
            && let Some(ack) = waiting.pop_front()
        {
            let ack: jetstream::context::PublishAckFuture = ack;
            ack.await.map_err(|e| format!("a message was not stored: {e}"))?;
        }
        let ack = js.publish(subject.to_string(), payload.into()).await.map_err(|e| format!("publishing: {e}"))?;
        waiting.push_back(ack);
    }
    for ack in waiting {
        ack.await.map_err(|e| format!("a message was not stored: {e}"))?;
    }
    client.flush().await.map_err(|e| e.to_string())
}

/// What a durable consumer has not acknowledged yet.
pub struct Lag {
    /// Messages not yet delivered, plus those delivered and not acknowledged.
    pub pending: u64,
    /// When the oldest of them was stored, if there is one.
    pub oldest: Option<chrono::DateTime<chrono::Utc>>,
}

/// The lag of a source's consumer (`lakehouse status`); `None` before its first run created it.
pub async fn lag(spec: &Spec, source: &str) -> Result<Option<Lag>, String> {
    let options = Options::from_env(spec).map_err(|e| e.to_string())?;
    let client = connect(spec, &options, source).await.map_err(|e| format!("cannot connect: {e}"))?;
    let js = jetstream::new(client);
    let stream = js.get_stream(&spec.stream).await.map_err(|e| format!("stream `{}`: {e}", spec.stream))?;
    let name = spec.consumer.clone().unwrap_or_else(|| format!("lakehouse_{source}"));
    let Ok(mut consumer) = stream.get_consumer::<pull::Config>(&name).await else { return Ok(None) };
    let info = consumer.info().await.map_err(|e| e.to_string())?;
    let pending = info.num_pending + info.num_ack_pending as u64;
    let next = info.ack_floor.stream_sequence + 1;
    let filter = spec.subject.clone().unwrap_or_else(|| ">".into());
    let oldest = if pending == 0 {
        None
    } else {
        let message = stream.raw_message_builder().sequence(next).next_by_subject(filter).send().await;
        message.ok().and_then(|m| chrono::DateTime::from_timestamp(m.time.unix_timestamp(), 0))
    };
    Ok(Some(Lag { pending, oldest }))
}

impl NatsSource {
    pub fn new(m: &SourceManifest, spec: &Spec, lh: &crate::Lakehouse) -> Result<Self, ConnectorError> {
        Ok(Self {
            spec: spec.clone(),
            name: m.name.to_string(),
            consumer: spec.consumer.clone().unwrap_or_else(|| format!("lakehouse_{}", m.name)),
            options: Options::from_env(spec)?,
            archive: Archive::new(lh, m.name.as_str(), super::MAX_STREAM_UNIT)?,
            max_record_bytes: lh.project.file.limits.max_record_bytes,
            pending: tokio::sync::Mutex::new(None),
        })
    }

    /// `nats <host:port> stream S consumer C`, for messages (never credentials: the URL holds none).
    fn describe(&self) -> String {
        let server = Url::parse(&self.spec.url)
            .ok()
            .map(|u| format!("{}:{}", u.host_str().unwrap_or_default(), u.port().unwrap_or(4222)))
            .unwrap_or_default();
        format!("nats {server} stream `{}` consumer `{}`", self.spec.stream, self.consumer)
    }

    fn failed(&self, detail: impl std::fmt::Display) -> ConnectorError {
        ConnectorError::Broker(format!("{}: {detail}; nothing was committed", self.describe()))
    }

    async fn connect(&self) -> Result<async_nats::Client, ConnectorError> {
        connect(&self.spec, &self.options, &self.name).await.map_err(|e| self.failed(format!("cannot connect: {e}")))
    }

    /// The durable consumer, created when it does not exist; one that exists with another subject filter is
    /// refused (it would read other messages than the manifest says).
    async fn consumer(&self, js: &jetstream::Context) -> Result<PullConsumer, ConnectorError> {
        let stream = js.get_stream(&self.spec.stream).await.map_err(|e| {
            self.failed(format!(
                "the stream cannot be read ({e}); streams are created on the server (`nats stream add`)"
            ))
        })?;
        let filter = self.spec.subject.clone().unwrap_or_default();
        match stream.get_consumer::<pull::Config>(&self.consumer).await {
            Ok(consumer) => {
                let config = &consumer.cached_info().config;
                if config.filter_subject != filter {
                    return Err(self.failed(format!(
                        "the consumer exists with subject filter `{}`, and the manifest says `{filter}`: delete the \
                         consumer (`nats consumer rm`) or name another one in connector.consumer",
                        config.filter_subject
                    )));
                }
                if config.ack_policy != AckPolicy::Explicit {
                    return Err(self.failed("the consumer exists without explicit acknowledgements: name another one"));
                }
                Ok(consumer)
            }
            Err(_) => {
                let config = pull::Config {
                    durable_name: Some(self.consumer.clone()),
                    description: Some(format!("lakehouse source {}", self.name)),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: self.spec.ack_wait.0,
                    filter_subject: filter,
                    max_ack_pending: (self.spec.batch.max_records * 2).max(1000) as i64,
                    ..Default::default()
                };
                stream
                    .create_consumer(config)
                    .await
                    .map_err(|e| self.failed(format!("the consumer cannot be created: {e}")))
            }
        }
    }
}

#[async_trait::async_trait]
impl Connector for NatsSource {
    fn location(&self) -> &Url {
        self.archive.url()
    }

    async fn poll(
        &self,
        taken: &BTreeMap<String, LedgerRow>,
        position: Option<&str>,
        batch: i64,
    ) -> Result<Polled, ConnectorError> {
        if batch % stream::SWEEP_EVERY == 0 {
            self.archive.sweep(taken).await;
        }
        let client = self.connect().await?;
        let js = jetstream::new(client.clone());
        let mut consumer = self.consumer(&js).await?;
        let floor = consumer.info().await.map_err(|e| self.failed(e))?.ack_floor.stream_sequence;
        let mut committed = position
            .and_then(|p| serde_json::from_str::<Position>(p).ok())
            .map(|p| p.committed.above(floor))
            .unwrap_or_default();
        let max = &self.spec.batch;
        // The pull's expiry: JetStream wants at least a second.
        let wait = max.max_wait.0.max(Duration::from_secs(1));
        let mut messages = consumer
            .batch()
            .max_messages(max.max_records as usize)
            // Never below the largest message a NATS server takes (64 MiB): a message larger than the pull's
            // byte limit would be refused to the consumer at every run.
            .max_bytes(max.max_bytes.max(64 << 20) as usize)
            .expires(wait)
            .messages()
            .await
            .map_err(|e| self.failed(format!("cannot pull messages: {e}")))?;
        let mut lines = Batch::new(self.max_record_bytes);
        let mut ackers = Vec::new();
        let mut redelivered = 0u64;
        // The server ends the pull at its expiry; the client's stream may end seconds later (it waits for the
        // expiry's status message): the batch closes on our own clock, a little after the server's.
        let deadline = tokio::time::Instant::now() + wait + Duration::from_millis(100);
        while let Ok(Some(message)) = tokio::time::timeout_at(deadline, messages.next()).await {
            let message = message.map_err(|e| self.failed(format!("while pulling messages: {e}")))?;
            let sequence = message
                .info()
                .map_err(|e| self.failed(format!("a message without its metadata: {e}")))?
                .stream_sequence;
            let (message, acker) = message.split();
            ackers.push(acker);
            if sequence <= floor || committed.contains(sequence) {
                redelivered += 1;
                continue;
            }
            let mut extra: Vec<(&str, Value)> = Vec::new();
            if let Some(f) = &self.spec.subject_field {
                extra.push((f, Value::from(message.subject.as_str())));
            }
            if let Some(f) = &self.spec.sequence_field {
                extra.push((f, Value::from(sequence)));
            }
            lines.render(&message.payload, &extra);
            lines.push_rendered().map_err(|e| self.failed(format!("writing the batch: {e}")))?;
            committed.insert(sequence);
        }
        drop(messages);
        if redelivered > 0 {
            tracing::info!(messages = redelivered, "messages delivered again after their commit: not landed twice");
        }
        if lines.records == 0 {
            // Nothing new: redeliveries of committed messages are acknowledged now.
            acknowledge_all(&client, ackers).await.map_err(|e| self.failed(e))?;
            return Ok(Polled::default());
        }
        let unit = lines.archive(&self.archive, batch).await?;
        tracing::info!(messages = ackers.len() as u64 - redelivered, bytes = unit.size, "micro-batch received");
        *self.pending.lock().await = Some(Pending { client, ackers });
        let position = serde_json::to_string(&Position { committed }).ok();
        Ok(Polled { units: vec![unit], rejected: Vec::new(), waiting: Vec::new(), position })
    }

    fn archive(&self) -> Option<&Archive> {
        Some(&self.archive)
    }

    async fn acknowledge(&self, _batch: i64) -> Result<(), ConnectorError> {
        let Some(p) = self.pending.lock().await.take() else { return Ok(()) };
        acknowledge_all(&p.client, p.ackers)
            .await
            .map_err(|e| ConnectorError::Broker(format!("{}: acknowledging: {e}", self.describe())))
    }

    /// The whole ledger only when the archive is swept (it tells which run directories a commit names).
    fn last_batch_only(&self, batch: i64) -> bool {
        batch % stream::SWEEP_EVERY != 0
    }

    async fn discard(&self, units: &[FileEntry]) {
        // Not acknowledged: the server delivers the batch again after `ack_wait`.
        self.pending.lock().await.take();
        self.archive.discard(units).await
    }
}

/// Acknowledges messages and waits until the server has them.
async fn acknowledge_all(client: &async_nats::Client, ackers: Vec<jetstream::message::Acker>) -> Result<(), String> {
    for acker in ackers {
        acker.ack().await.map_err(|e| e.to_string())?;
    }
    client.flush().await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_forget_what_the_floor_covers() {
        let mut r = Ranges::default();
        for n in [5, 7, 6, 1, 2, 10, 9, 8] {
            r.insert(n);
        }
        assert_eq!(r.0, vec![(1, 2), (5, 10)]);
        assert!(r.contains(1) && r.contains(7) && !r.contains(3) && !r.contains(11));
        r.insert(3);
        r.insert(4);
        assert_eq!(r.0, vec![(1, 10)]);
        assert_eq!(r.clone().above(4).0, vec![(5, 10)]);
        assert_eq!(r.above(10).0, vec![]);
    }
}
