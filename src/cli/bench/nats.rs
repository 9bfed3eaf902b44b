//! `synap bench nats`: the publish shapes of `bench publish`, against a
//! NATS JetStream stream, so that both systems are measured by one load
//! generator in one run (`scripts/bench`).
//!
//! A JetStream publish is a core NATS `PUB` with a reply subject; the
//! server answers on it once the stream has stored (and replicated) the
//! message: `{"stream":..,"seq":..}` or `{"error":{..}}`. The client here
//! speaks just that much of the text protocol: `CONNECT`, `SUB` on an
//! inbox, `PUB`, `MSG`, `PING`/`PONG`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::percentile;

#[derive(Debug, Args)]
pub struct NatsBench {
    /// NATS servers (`host:port`), comma-separated; publishers are spread
    /// over them round-robin.
    #[arg(long, default_value = "127.0.0.1:4222", value_delimiter = ',')]
    servers: Vec<String>,
    /// Concurrent publishers, one connection each.
    #[arg(long, default_value_t = 64)]
    publishers: usize,
    /// Publishes in flight per publisher (1: wait for each acknowledgement).
    #[arg(long, default_value_t = 1)]
    inflight: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Subjects to spread the messages over (`bench.0`, `bench.1`, ...).
    #[arg(long, default_value_t = 4)]
    subjects: usize,
    /// The stream, created (file storage, `--replicas`) if missing.
    #[arg(long, default_value = "BENCH")]
    stream: String,
    /// Replicas of the stream when it is created.
    #[arg(long, default_value_t = 3)]
    replicas: u32,
}

/// One connection: a buffered writer and a reader of `MSG`s on its inbox.
struct Connection {
    reader: BufReader<OwnedReadHalf>,
    writer: BufWriter<OwnedWriteHalf>,
    inbox: String,
}

impl Connection {
    async fn open(server: &str) -> Result<Self, String> {
        let stream = TcpStream::connect(server).await.map_err(|e| format!("{server}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (read, write) = stream.into_split();
        let mut connection = Self {
            reader: BufReader::new(read),
            writer: BufWriter::new(write),
            inbox: format!("_INBOX.{}", uuid::Uuid::new_v4().simple()),
        };
        let mut info = String::new();
        connection.reader.read_line(&mut info).await.map_err(|e| e.to_string())?;
        if !info.starts_with("INFO ") {
            return Err(format!("{server} is not a NATS server: {info:?}"));
        }
        let hello = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"name\":\"synap-bench\"}}\r\nSUB {}.* 1\r\nPING\r\n",
            connection.inbox
        );
        connection.writer.write_all(hello.as_bytes()).await.map_err(|e| e.to_string())?;
        connection.writer.flush().await.map_err(|e| e.to_string())?;
        loop {
            let mut line = String::new();
            if connection.reader.read_line(&mut line).await.map_err(|e| e.to_string())? == 0 {
                return Err(format!("{server} closed the connection"));
            }
            match line.trim_end() {
                "PONG" => return Ok(connection),
                "+OK" => continue,
                other if other.starts_with("-ERR") => return Err(format!("{server}: {other}")),
                _ => continue,
            }
        }
    }

    /// Queues a publish to `subject` whose acknowledgement comes back with
    /// reply token `token`.
    async fn publish(&mut self, subject: &str, token: u64, payload: &[u8]) -> std::io::Result<()> {
        let head = format!("PUB {subject} {}.{token} {}\r\n", self.inbox, payload.len());
        self.writer.write_all(head.as_bytes()).await?;
        self.writer.write_all(payload).await?;
        self.writer.write_all(b"\r\n").await
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush().await
    }

    /// The next message on the inbox: its reply token and payload. Answers
    /// the server's `PING`s on the way.
    async fn next_reply(&mut self) -> Result<(u64, Vec<u8>), String> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).await.map_err(|e| e.to_string())? == 0 {
                return Err("the server closed the connection".into());
            }
            let line = line.trim_end();
            if line == "PING" {
                self.writer.write_all(b"PONG\r\n").await.map_err(|e| e.to_string())?;
                self.writer.flush().await.map_err(|e| e.to_string())?;
                continue;
            }
            if let Some(err) = line.strip_prefix("-ERR") {
                return Err(format!("server error:{err}"));
            }
            let Some(rest) = line.strip_prefix("MSG ") else { continue };
            // MSG <subject> <sid> [reply-to] <#bytes>
            let fields: Vec<&str> = rest.split(' ').collect();
            let (Some(subject), Some(len)) = (fields.first(), fields.last()) else {
                return Err(format!("bad MSG line {line:?}"));
            };
            let len: usize = len.parse().map_err(|_| format!("bad MSG line {line:?}"))?;
            let mut payload = vec![0; len + 2];
            self.reader.read_exact(&mut payload).await.map_err(|e| e.to_string())?;
            payload.truncate(len);
            let token = subject.rsplit('.').next().and_then(|t| t.parse().ok()).unwrap_or(u64::MAX);
            return Ok((token, payload));
        }
    }

    /// A request and its one reply (stream administration); `None` if no
    /// reply came within two seconds (a cluster that just started drops
    /// JetStream requests until it has a leader).
    async fn request(&mut self, subject: &str, body: &str) -> Result<Option<serde_json::Value>, String> {
        self.publish(subject, 0, body.as_bytes()).await.map_err(|e| e.to_string())?;
        self.flush().await.map_err(|e| e.to_string())?;
        let Ok(reply) = tokio::time::timeout(Duration::from_secs(2), self.next_reply()).await else {
            return Ok(None);
        };
        let (_, reply) = reply?;
        serde_json::from_slice(&reply)
            .map(Some)
            .map_err(|e| format!("{subject} answered something that is not JSON: {e}"))
    }
}

/// Whether a JetStream acknowledgement says the message was stored.
fn stored(reply: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(reply).is_ok_and(|v| v.get("seq").is_some_and(|s| s.is_u64()))
}

pub async fn run(bench: NatsBench) -> Result<(), String> {
    if bench.servers.is_empty() || bench.publishers == 0 || bench.subjects == 0 {
        return Err("need at least one server, one publisher and one subject".into());
    }
    let mut admin = Connection::open(&bench.servers[0]).await?;
    let config = serde_json::json!({
        "name": bench.stream, "subjects": ["bench.>"], "storage": "file", "num_replicas": bench.replicas,
    });
    // A cluster that just started has no JetStream leader yet: retry for a
    // while. 10058: the stream exists already.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let created = admin.request(&format!("$JS.API.STREAM.CREATE.{}", bench.stream), &config.to_string()).await?;
        let error = match &created {
            Some(answer) => answer.get("error").filter(|e| e["err_code"] != 10058).cloned(),
            None => Some(serde_json::Value::from("no answer")),
        };
        match error {
            None => break,
            Some(error) if Instant::now() > deadline => {
                return Err(format!("creating stream {}: {error}", bench.stream));
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    let inflight = bench.inflight.max(1);
    let payload = Arc::new(format!(r#"{{"pad":"{}"}}"#, "x".repeat(bench.size)).into_bytes());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for p in 0..bench.publishers {
        let mut connection = Connection::open(&bench.servers[p % bench.servers.len()]).await?;
        let subject = format!("bench.{}", p % bench.subjects);
        let (payload, stop) = (payload.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut sent_at: VecDeque<(u64, Instant)> = VecDeque::new();
            let mut token = 1u64;
            loop {
                let mut queued = false;
                while !stop.load(Ordering::Relaxed) && sent_at.len() < inflight {
                    if connection.publish(&subject, token, &payload).await.is_err() {
                        return (latencies, errors + sent_at.len() as u64);
                    }
                    sent_at.push_back((token, Instant::now()));
                    token += 1;
                    queued = true;
                }
                if queued && connection.flush().await.is_err() {
                    return (latencies, errors + sent_at.len() as u64);
                }
                if sent_at.is_empty() {
                    break;
                }
                let Ok((token, reply)) = connection.next_reply().await else {
                    return (latencies, errors + sent_at.len() as u64);
                };
                let Some(i) = sent_at.iter().position(|(t, _)| *t == token) else { continue };
                let Some((_, at)) = sent_at.remove(i) else { continue };
                if stored(&reply) {
                    latencies.push(at.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let (latencies, errors, elapsed) = super::run_for(bench.seconds, &stop, tasks).await?;
    println!(
        "publish (nats): {} publishers x {} in flight, {} B payload, {:.1} s: {} messages acknowledged ({:.0}/s), {} errors, latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        bench.publishers,
        inflight,
        bench.size,
        elapsed,
        latencies.len(),
        latencies.len() as f64 / elapsed,
        errors,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
    );
    Ok(())
}
