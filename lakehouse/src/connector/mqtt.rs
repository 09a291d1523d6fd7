//! `kind: mqtt`: topics of an MQTT broker read with QoS 1 in a persistent session (MQTT 5), one micro-batch a
//! run, acknowledged after its commit.
//!
//! A run connects with the source's client id and `clean start` off (the broker kept the session, and the
//! messages that arrived for it, since the last run), subscribes to the topics, and receives messages until the
//! batch is full or `batch.max_wait` has passed. The batch is archived as one unit and returned; ingest commits
//! it, then [`Connector::acknowledge`] sends the PUBACKs and disconnects. A run that fails, or a process that
//! dies, acknowledges nothing: the broker delivers those messages again to the next run, with the DUP flag.
//!
//! **Exactly once.** A message can be delivered again after its batch was committed (a crash between the commit
//! and the PUBACKs). The broker then sets DUP; the run compares such a message's `message_id` with the ids of
//! the last committed batch (read back from its archived unit) and of the redeliveries that batch recognized
//! (its position), and acknowledges it without landing it again. Since PUBACKs are sent only after a commit, a
//! message committed and not acknowledged is always in the last committed batch or among the redeliveries it
//! recognized: that is all the memory needed.
//!
//! The client is ours (~300 lines of MQTT 5: CONNECT, SUBSCRIBE, PUBLISH, PUBACK, PINGREQ, DISCONNECT), over
//! TCP or rustls: a run needs nothing else, and the ack-after-commit rule is easiest to keep when every packet is
//! ours to send.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use url::Url;

use super::archive::Archive;
use super::stream::{self, Batch, MessageId};
use super::{Connector, ConnectorError, FileEntry, Polled};
use crate::ingest::LedgerRow;
use crate::manifest::{MqttConnector as Spec, SourceManifest};

/// Seconds between keep-alive pings the broker may expect: a run never stays silent longer than its batch's
/// `max_wait` and commit, so this only bounds how long the broker keeps a dead connection.
const KEEP_ALIVE: u16 = 300;

/// Whether `filter` is an MQTT topic filter: `#` alone and last, `+` alone in its level, no NUL.
pub fn check_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() || filter.len() > 65_535 {
        return Err("a filter is 1 to 65535 bytes".into());
    }
    if filter.contains('\0') {
        return Err("a filter has no NUL character".into());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err("`#` is a whole level, the last one".into());
        }
        if level.contains('+') && *level != "+" {
            return Err("`+` is a whole level".into());
        }
    }
    Ok(())
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A message received.
struct Publish {
    topic: String,
    /// `None` at QoS 0 (nothing to acknowledge, never delivered again).
    packet_id: Option<u16>,
    dup: bool,
    payload: Vec<u8>,
}

/// A connection to the broker.
struct Client {
    io: Box<dyn Io>,
    /// Where the broker is, for messages (`host:port`).
    broker: String,
    /// The largest packet kept whole; a larger PUBLISH keeps this much of its payload.
    max_packet: usize,
    last_sent: Instant,
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend((s.len() as u16).to_be_bytes());
    out.extend(s);
}

fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            break;
        }
    }
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    put_varint(&mut out, body.len());
    out.extend(body);
    out
}

/// Reads a variable byte integer from `bytes` at `*at`.
fn varint(bytes: &[u8], at: &mut usize) -> Option<usize> {
    let mut n = 0usize;
    for shift in 0..4 {
        let b = *bytes.get(*at)?;
        *at += 1;
        n |= ((b & 0x7f) as usize) << (7 * shift);
        if b & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

/// What a CONNACK or DISCONNECT reason code means, for an error message.
fn reason(code: u8) -> &'static str {
    match code {
        0x80 => "unspecified error",
        0x81 => "malformed packet",
        0x82 => "protocol error",
        0x84 => "unsupported protocol version (the broker must speak MQTT 5)",
        0x85 => "client identifier not valid",
        0x86 => "bad user name or password",
        0x87 => "not authorized",
        0x88 => "server unavailable",
        0x89 => "server busy",
        0x8A => "banned",
        0x8B => "server shutting down",
        0x8E => "session taken over (another client connected with the same client id)",
        0x8F => "topic filter invalid",
        0x93 => "receive maximum exceeded",
        0x95 => "packet too large",
        0x97 => "quota exceeded",
        0x9C => "use another server",
        0x9D => "server moved",
        0x9F => "connection rate exceeded",
        _ => "refused",
    }
}

impl Client {
    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.io
            .write_all(bytes)
            .await
            .map_err(|e| format!("{}: the connection was lost while writing: {e}", self.broker))?;
        self.io.flush().await.map_err(|e| format!("{}: the connection was lost while writing: {e}", self.broker))?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// The next packet: its first byte and its body (a PUBLISH larger than `max_packet` is cut there: its payload
    /// is then longer than any record may be, and is quarantined as such).
    async fn read_packet(&mut self) -> Result<(u8, Vec<u8>), String> {
        let lost = |e: std::io::Error| format!("the connection was lost: {e}");
        let first = self.io.read_u8().await.map_err(lost)?;
        let mut len = 0usize;
        for shift in 0..4 {
            let b = self.io.read_u8().await.map_err(lost)?;
            len |= ((b & 0x7f) as usize) << (7 * shift);
            if b & 0x80 == 0 {
                break;
            }
            if shift == 3 {
                return Err("the broker sent a malformed packet length".into());
            }
        }
        let keep = len.min(self.max_packet);
        let mut body = vec![0u8; keep];
        self.io.read_exact(&mut body).await.map_err(lost)?;
        let mut rest = (len - keep) as u64;
        if rest > 0 {
            let mut sink = tokio::io::sink();
            rest -= tokio::io::copy(&mut (&mut self.io).take(rest), &mut sink).await.map_err(lost)?;
            if rest > 0 {
                return Err("the connection was lost within a packet".into());
            }
        }
        Ok((first, body))
    }

    async fn connect(spec: &Spec, settings: &Settings, max_packet: usize) -> Result<(Self, bool), String> {
        Self::connect_with(spec, settings, max_packet, false).await
    }

    /// Connects; `clean`: a session of its own that ends with the connection (a publisher's).
    async fn connect_with(
        spec: &Spec,
        settings: &Settings,
        max_packet: usize,
        clean: bool,
    ) -> Result<(Self, bool), String> {
        let url = Url::parse(&spec.url).map_err(|e| format!("`{}` is not a URL: {e}", spec.url))?;
        let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']).to_string();
        let tls = url.scheme() == "mqtts";
        let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
        let broker = format!("{host}:{port}");
        let timeout = spec.timeout.0;
        let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host.as_str(), port)))
            .await
            .map_err(|_| format!("{broker}: no connection within {}s", timeout.as_secs()))?
            .map_err(|e| format!("{broker}: cannot connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &settings.tls {
            Some(config) if tls => {
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|_| format!("{broker}: `{host}` is not a host name TLS can check"))?;
                let stream =
                    tokio::time::timeout(timeout, tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp))
                        .await
                        .map_err(|_| format!("{broker}: no TLS handshake within {}s", timeout.as_secs()))?
                        .map_err(|e| format!("{broker}: TLS: {e}"))?;
                Box::new(stream)
            }
            _ => Box::new(tcp),
        };
        let mut client = Self { io, broker: broker.clone(), max_packet, last_sent: Instant::now() };
        let mut body = Vec::new();
        put_str(&mut body, b"MQTT");
        body.push(5);
        // Clean start off: the session and its messages are kept between runs.
        let mut flags = if clean { 0x02 } else { 0 };
        if settings.username.is_some() {
            flags |= 0x80;
        }
        if settings.password.is_some() {
            flags |= 0x40;
        }
        body.push(flags);
        body.extend(KEEP_ALIVE.to_be_bytes());
        let mut props = vec![0x11];
        let expiry = if clean { 0 } else { spec.session_expiry.0.as_secs().min(u32::MAX as u64) as u32 };
        props.extend(expiry.to_be_bytes());
        props.push(0x21);
        props.extend((spec.batch.max_records.clamp(1, 65_535) as u16).to_be_bytes());
        put_varint(&mut body, props.len());
        body.extend(props);
        put_str(&mut body, settings.client_id.as_bytes());
        if let Some(user) = &settings.username {
            put_str(&mut body, user.as_bytes());
        }
        if let Some(password) = &settings.password {
            put_str(&mut body, password.as_bytes());
        }
        client.send(&packet(0x10, &body)).await?;
        let (first, body) = tokio::time::timeout(timeout, client.read_packet())
            .await
            .map_err(|_| format!("{broker}: no answer to CONNECT within {}s", timeout.as_secs()))??;
        if first >> 4 != 2 || body.len() < 2 {
            return Err(format!("{broker}: the broker did not answer CONNECT with CONNACK (is it an MQTT broker?)"));
        }
        if body[1] >= 0x80 {
            return Err(format!("{broker}: connection refused: {} (reason code 0x{:02X})", reason(body[1]), body[1]));
        }
        Ok((client, body[0] & 1 == 1))
    }

    /// Subscribes to the topics with QoS 1; messages that arrive before the SUBACK are kept in `early`.
    async fn subscribe(
        &mut self,
        topics: &[String],
        timeout: Duration,
        early: &mut Vec<Publish>,
    ) -> Result<(), String> {
        let mut body = vec![0, 1, 0]; // packet id 1, no properties
        for t in topics {
            put_str(&mut body, t.as_bytes());
            // QoS 1; retained messages only when the subscription is new (not again at each run).
            body.push(0x01 | (1 << 4));
        }
        self.send(&packet(0x82, &body)).await?;
        let deadline = Instant::now() + timeout;
        loop {
            let (first, body) = tokio::time::timeout_at(deadline, self.read_packet())
                .await
                .map_err(|_| format!("{}: no answer to SUBSCRIBE within {}s", self.broker, timeout.as_secs()))??;
            match first >> 4 {
                9 => {
                    let mut at = 2;
                    let props = varint(&body, &mut at).ok_or("the broker sent a malformed SUBACK")?;
                    let codes = body.get(at + props..).unwrap_or_default();
                    for (topic, code) in topics.iter().zip(codes) {
                        match code {
                            1 | 2 => {}
                            0 => {
                                return Err(format!(
                                    "{}: topic `{topic}` was granted QoS 0 only: its messages could be lost, and are \
                                     not read",
                                    self.broker
                                ));
                            }
                            c => {
                                return Err(format!(
                                    "{}: subscription to `{topic}` refused: {} (reason code 0x{c:02X})",
                                    self.broker,
                                    reason(*c)
                                ));
                            }
                        }
                    }
                    return Ok(());
                }
                3 => early.push(self.publish(first, body)?),
                _ => self.other(first, &body)?,
            }
        }
    }

    fn publish(&self, first: u8, body: Vec<u8>) -> Result<Publish, String> {
        let malformed = || format!("{}: the broker sent a malformed PUBLISH", self.broker);
        let qos = (first >> 1) & 3;
        let len = u16::from_be_bytes([*body.first().ok_or_else(malformed)?, *body.get(1).ok_or_else(malformed)?]);
        let mut at = 2 + len as usize;
        let topic = String::from_utf8_lossy(body.get(2..at).ok_or_else(malformed)?).into_owned();
        let packet_id = if qos > 0 {
            let id = body.get(at..at + 2).ok_or_else(malformed)?;
            at += 2;
            Some(u16::from_be_bytes([id[0], id[1]]))
        } else {
            None
        };
        let props = varint(&body, &mut at).ok_or_else(malformed)?;
        at += props;
        let payload = body.get(at..).ok_or_else(malformed)?.to_vec();
        Ok(Publish { topic, packet_id, dup: first & 0x08 != 0, payload })
    }

    /// A packet that is not a PUBLISH: a ping answer is nothing, a DISCONNECT ends the run with its reason.
    fn other(&self, first: u8, body: &[u8]) -> Result<(), String> {
        match first >> 4 {
            13 => Ok(()),
            14 => {
                let code = body.first().copied().unwrap_or(0);
                Err(format!(
                    "{}: the broker closed the connection: {} (reason code 0x{code:02X})",
                    self.broker,
                    reason(code)
                ))
            }
            t => Err(format!("{}: unexpected packet type {t} from the broker", self.broker)),
        }
    }

    /// The next message, or `None` once `deadline` passes.
    async fn next(&mut self, deadline: Instant) -> Result<Option<Publish>, String> {
        loop {
            if self.last_sent.elapsed() > Duration::from_secs(u64::from(KEEP_ALIVE) / 2) {
                self.send(&[0xC0, 0]).await?;
            }
            let Ok(read) = tokio::time::timeout_at(deadline, self.read_packet()).await else { return Ok(None) };
            let (first, body) = read.map_err(|e| format!("{}: {e}", self.broker))?;
            if first >> 4 == 3 {
                return self.publish(first, body).map(Some);
            }
            self.other(first, &body)?;
        }
    }

    /// Acknowledges messages, in the order they came (MQTT's rule), then disconnects (the session stays).
    async fn ack_and_close(mut self, ids: &[u16]) -> Result<(), String> {
        let mut out = Vec::with_capacity(ids.len() * 4 + 2);
        for id in ids {
            out.extend([0x40, 2]);
            out.extend(id.to_be_bytes());
        }
        out.extend([0xE0, 0]);
        self.send(&out).await?;
        let _ = self.io.shutdown().await;
        Ok(())
    }
}

/// Publishes payloads to `topic` with QoS 1 under a clean session, waiting for every PUBACK (the broker then
/// has them); at most `window` unacknowledged at a time. For `lakehouse feed` (demonstrations, tests and
/// benchmarks).
pub async fn publish(spec: &Spec, topic: &str, payloads: Vec<Vec<u8>>, window: usize) -> Result<(), String> {
    let settings =
        Settings::from_env(spec, format!("lakehouse-feed-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]))
            .map_err(|e| e.to_string())?;
    let mut publisher = spec.clone();
    publisher.batch.max_records = 65_535;
    let (mut client, _) = Client::connect_with(&publisher, &settings, 1 << 20, true).await?;
    let mut in_flight = 0usize;
    let mut next_id = 0u16;
    let mut out = Vec::new();
    let mut payloads = payloads.into_iter().peekable();
    while payloads.peek().is_some() || in_flight > 0 {
        out.clear();
        while in_flight < window
            && let Some(payload) = payloads.next()
        {
            next_id = next_id.checked_add(1).unwrap_or(1);
            let mut body = Vec::with_capacity(payload.len() + topic.len() + 5);
            put_str(&mut body, topic.as_bytes());
            body.extend(next_id.to_be_bytes());
            body.push(0); // no properties
            body.extend(payload);
            out.extend(packet(0x32, &body));
            in_flight += 1;
        }
        if !out.is_empty() {
            client.send(&out).await?;
        }
        let deadline = Instant::now() + spec.timeout.0;
        let Ok(read) = tokio::time::timeout_at(deadline, client.read_packet()).await else {
            return Err(format!("{}: no PUBACK within {}s", client.broker, spec.timeout.0.as_secs()));
        };
        let (first, body) = read.map_err(|e| format!("{}: {e}", client.broker))?;
        match first >> 4 {
            4 => {
                if body.get(2).is_some_and(|code| *code >= 0x80) {
                    return Err(format!("{}: a message was refused: {}", client.broker, reason(body[2])));
                }
                in_flight -= 1;
            }
            _ => client.other(first, &body)?,
        }
    }
    client.ack_and_close(&[]).await
}

/// What a run needs besides the manifest: secrets from the environment, TLS, the client id.
struct Settings {
    client_id: String,
    username: Option<String>,
    password: Option<String>,
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
}

/// A batch received and not yet acknowledged.
struct Pending {
    client: Client,
    acks: Vec<u16>,
}

pub struct MqttSource {
    spec: Spec,
    settings: Settings,
    archive: Archive,
    max_record_bytes: u64,
    pending: tokio::sync::Mutex<Option<Pending>>,
}

/// The position of a committed batch: the redeliveries it recognized (hashes of their ids).
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Position {
    redelivered: Vec<String>,
}

impl Settings {
    fn from_env(spec: &Spec, client_id: String) -> Result<Self, ConnectorError> {
        let username = spec.username_env.as_deref().map(|v| super::secret(v, "username_env")).transpose()?;
        let password = spec.password_env.as_deref().map(|v| super::secret(v, "password_env")).transpose()?;
        let tls = if spec.url.starts_with("mqtts:") {
            let ca =
                spec.ca_file_env.as_deref().map(|v| Ok::<_, ConnectorError>((v, super::secret(v, "ca_file_env")?)));
            let ca = ca.transpose()?;
            let config = super::tls_client_config(ca.as_ref().map(|(v, f)| (*v, f.as_str())))
                .map_err(|detail| ConnectorError::Broker(format!("{}: {detail}", spec.url)))?;
            Some(Arc::new(config))
        } else {
            None
        };
        Ok(Self { client_id, username, password, tls })
    }
}

impl MqttSource {
    pub fn new(m: &SourceManifest, spec: &Spec, lh: &crate::Lakehouse) -> Result<Self, ConnectorError> {
        let client_id = spec.client_id.clone().unwrap_or_else(|| format!("lakehouse-{}", m.name));
        let max_record_bytes = lh.project.file.limits.max_record_bytes;
        Ok(Self {
            spec: spec.clone(),
            settings: Settings::from_env(spec, client_id)?,
            archive: Archive::new(lh, m.name.as_str(), super::MAX_STREAM_UNIT)?,
            max_record_bytes,
            pending: tokio::sync::Mutex::new(None),
        })
    }

    /// A failed run: nothing of it is committed, nothing acknowledged.
    fn failed(&self, detail: String) -> ConnectorError {
        ConnectorError::Broker(format!("mqtt {detail}; nothing was committed"))
    }

    /// The ids of the last committed batch and of the redeliveries it recognized.
    async fn known(
        &self,
        taken: &BTreeMap<String, LedgerRow>,
        position: Option<&str>,
    ) -> Result<HashSet<MessageId>, ConnectorError> {
        let last = taken.values().map(|r| r.batch).max();
        let units: Vec<&str> = taken.iter().filter(|(_, r)| Some(r.batch) == last).map(|(p, _)| p.as_str()).collect();
        let mut ids = position
            .and_then(|p| serde_json::from_str::<Position>(p).ok())
            .map(|p| stream::ids_from_hex(&p.redelivered))
            .unwrap_or_default();
        if let Err(e) = stream::unit_ids(&self.archive, &units, &self.spec.message_id, &mut ids).await {
            // Removed by retention (a stream silent for longer than it keeps data): nothing to compare with.
            tracing::warn!(error = %e, "the last committed batch's unit cannot be read: redelivered messages are \
                compared with its recognized redeliveries only");
        }
        Ok(ids)
    }
}

#[async_trait::async_trait]
impl Connector for MqttSource {
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
        let max_packet = (self.max_record_bytes as usize).saturating_add(70_000).max(1 << 20);
        let (mut client, _) =
            Client::connect(&self.spec, &self.settings, max_packet).await.map_err(|d| self.failed(d))?;
        let mut early = Vec::new();
        client.subscribe(&self.spec.topics, self.spec.timeout.0, &mut early).await.map_err(|d| self.failed(d))?;
        let deadline = Instant::now() + self.spec.batch.max_wait.0;
        let mut lines = Batch::new(self.max_record_bytes);
        let mut acks = Vec::new();
        let mut known: Option<HashSet<MessageId>> = None;
        let mut in_batch: HashSet<MessageId> = HashSet::new();
        let mut redelivered: HashSet<MessageId> = HashSet::new();
        let mut early = early.into_iter();
        while lines.records < self.spec.batch.max_records && lines.bytes < self.spec.batch.max_bytes {
            let message = match early.next() {
                Some(m) => m,
                None => match client.next(deadline).await.map_err(|d| self.failed(d))? {
                    Some(m) => m,
                    None => break,
                },
            };
            let extra: Vec<(&str, Value)> = self
                .spec
                .topic_field
                .as_deref()
                .map(|f| (f, Value::from(message.topic.as_str())))
                .into_iter()
                .collect();
            let id = stream::line_id(lines.render(&message.payload, &extra), &self.spec.message_id);
            if message.dup || in_batch.contains(&id) {
                if known.is_none() {
                    known = Some(self.known(taken, position).await?);
                }
                if known.as_ref().is_some_and(|k| k.contains(&id)) || in_batch.contains(&id) {
                    redelivered.insert(id);
                    acks.extend(message.packet_id);
                    continue;
                }
            }
            in_batch.insert(id);
            lines.push_rendered().map_err(|e| self.failed(format!("writing the batch: {e}")))?;
            acks.extend(message.packet_id);
        }
        if !redelivered.is_empty() {
            tracing::info!(
                messages = redelivered.len(),
                "messages delivered again after their commit: not landed twice"
            );
        }
        if lines.records == 0 {
            // Nothing new: redeliveries of the last batch (if any) are acknowledged now.
            client.ack_and_close(&acks).await.map_err(|d| self.failed(d))?;
            return Ok(Polled::default());
        }
        let unit = lines.archive(&self.archive, batch).await?;
        tracing::info!(messages = in_batch.len(), bytes = unit.size, "micro-batch received");
        *self.pending.lock().await = Some(Pending { client, acks });
        let position = Position { redelivered: stream::ids_to_hex(redelivered.iter()) };
        Ok(Polled {
            units: vec![unit],
            rejected: Vec::new(),
            waiting: Vec::new(),
            position: serde_json::to_string(&position).ok(),
        })
    }

    fn archive(&self) -> Option<&Archive> {
        Some(&self.archive)
    }

    async fn acknowledge(&self, _batch: i64) -> Result<(), ConnectorError> {
        let Some(p) = self.pending.lock().await.take() else { return Ok(()) };
        p.client.ack_and_close(&p.acks).await.map_err(|d| ConnectorError::Broker(format!("mqtt {d}")))
    }

    /// The whole ledger only when the archive is swept (it tells which run directories a commit names).
    fn last_batch_only(&self, batch: i64) -> bool {
        batch % stream::SWEEP_EVERY != 0
    }

    async fn discard(&self, units: &[FileEntry]) {
        // Closing without acknowledging: the broker delivers the batch again to the next run.
        self.pending.lock().await.take();
        self.archive.discard(units).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_filters_are_checked_as_mqtt_does() {
        for ok in ["a", "city/traffic/+/flow", "#", "a/#", "+/+", "/a"] {
            assert!(check_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "a+/b", "a/b+", "x\0"] {
            assert!(check_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lengths_are_variable_byte_integers() {
        for n in [0usize, 127, 128, 16_383, 16_384, 2_097_151, 268_435_455] {
            let mut out = Vec::new();
            put_varint(&mut out, n);
            let mut at = 0;
            assert_eq!(varint(&out, &mut at), Some(n));
            assert_eq!(at, out.len());
        }
    }
}
