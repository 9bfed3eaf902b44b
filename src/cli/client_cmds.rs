//! The client subcommands: thin wrappers over [`crate::client::Client`]
//! that print JSON and turn errors into one line and exit code 1.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::client::Client;

/// How every client subcommand proves who it is and checks the node.
#[derive(Debug, Args)]
pub struct Access {
    /// API key, sent as a bearer token.
    #[arg(long, global = true, env = "SYNAP_API_KEY")]
    api_key: Option<String>,
    /// CA certificate (PEM) that https:// nodes are checked against
    /// (default: the system's roots).
    #[arg(long, global = true, env = "SYNAP_CA")]
    ca: Option<PathBuf>,
}

impl Access {
    /// A client of the nodes at `urls`, with the key and the CA.
    fn client<S: AsRef<str>>(&self, urls: &[S]) -> Result<Client, String> {
        let client = Client::cluster(urls).with_api_key(self.api_key.clone());
        match &self.ca {
            Some(ca) => client.with_ca(ca).map_err(|e| format!("--ca: {e}")),
            None => Ok(client),
        }
    }
}

/// Options every client subcommand takes.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Base URL of any node.
    #[arg(long, global = true, env = "SYNAP_URL", default_value = "http://127.0.0.1:15500")]
    url: String,
    #[command(flatten)]
    access: Access,
}

impl ClientArgs {
    fn client(&self) -> Result<Client, String> {
        self.access.client(&[&self.url])
    }
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Room to publish to.
    room: String,
    /// Event type, e.g. user.registered.
    event_type: String,
    /// Payload as JSON.
    json: String,
    /// Metadata entry (repeatable).
    #[arg(long = "metadata", value_name = "KEY=VALUE")]
    metadata: Vec<String>,
    /// Idempotency id for the event.
    #[arg(long)]
    id: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct PublishStreamArgs {
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Room to follow.
    room: String,
    /// First offset; negative counts back from the end (default: only new events).
    #[arg(long, allow_hyphen_values = true)]
    from: Option<i64>,
    /// Only these event types (patterns: `*` one segment, `>` the rest).
    #[arg(long)]
    types: Option<String>,
    /// Base URLs of the nodes, comma-separated; the stream moves to the next
    /// one when a node goes away.
    #[arg(long, env = "SYNAP_URL", default_value = "http://127.0.0.1:15500", value_delimiter = ',')]
    url: Vec<String>,
    #[command(flatten)]
    access: Access,
    /// Follow through this durable consumer instead: print and ack what it
    /// hands out, across workers and restarts (`--from` and `--types` are
    /// the consumer's settings then).
    #[arg(long, conflicts_with_all = ["from", "types"])]
    consumer: Option<String>,
}

#[derive(Debug, Args)]
pub struct ConsumerArgs {
    #[command(subcommand)]
    command: ConsumerCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Subcommand)]
enum ConsumerCommand {
    /// Create a durable consumer, or change its settings (its position
    /// stays).
    Add {
        /// The room.
        room: String,
        /// The consumer's name.
        name: String,
        #[command(flatten)]
        settings: ConsumerSettingsArgs,
    },
    /// List a room's consumers, one JSON object per line.
    Ls {
        /// The room.
        room: String,
    },
    /// Show a consumer's position and counters.
    Info {
        /// The room.
        room: String,
        /// The consumer.
        name: String,
    },
    /// Delete a consumer.
    Rm {
        /// The room.
        room: String,
        /// The consumer.
        name: String,
    },
}

#[derive(Debug, Args)]
struct ConsumerSettingsArgs {
    /// Where it starts: earliest, latest or an offset.
    #[arg(long)]
    start: Option<String>,
    /// Only these event types.
    #[arg(long)]
    types: Option<String>,
    /// How long a fetched message stays leased, in ms.
    #[arg(long)]
    ack_wait_ms: Option<u64>,
    /// Deliveries before a message is dead-lettered (0: unlimited).
    #[arg(long)]
    max_deliver: Option<u32>,
    /// Room for messages out of deliveries.
    #[arg(long)]
    dead_letter: Option<String>,
    /// Most messages delivered and not yet acked.
    #[arg(long)]
    max_ack_pending: Option<u32>,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// The room.
    room: String,
    /// The durable consumer to fetch from.
    name: String,
    /// Most messages to fetch.
    #[arg(long, default_value_t = 10)]
    max: u32,
    /// How long to wait for a message when none is ready, in ms.
    #[arg(long, default_value_t = 1000)]
    wait_ms: u64,
    /// Only look: hand the messages back at once instead of acking them
    /// (their delivery count still grows).
    #[arg(long)]
    no_ack: bool,
    /// Base URLs of the nodes, comma-separated; the consumer moves to the
    /// next one when a node goes away.
    #[arg(long, env = "SYNAP_URL", default_value = "http://127.0.0.1:15500", value_delimiter = ',')]
    url: Vec<String>,
    #[command(flatten)]
    access: Access,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Room to read.
    room: String,
    /// First offset; negative counts back from the end.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    from: i64,
    /// Most events to print.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Room.
    room: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Node to check (default: --url).
    target: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Show leader, term and members.
    Status,
    /// Initialise the cluster from the node's --peers.
    Init,
    /// Add a node as a learner (waits until it caught up).
    AddLearner {
        /// Its id.
        id: u64,
        /// Its base URL.
        url: String,
    },
    /// Make a learner a voter.
    Promote {
        /// Its id.
        id: u64,
    },
    /// Remove a node.
    Remove {
        /// Its id.
        id: u64,
    },
    /// Have the node (--url) build a snapshot now and purge its log behind it.
    Snapshot,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The file to write (replaced only by a whole, checked copy).
    #[arg(long)]
    out: std::path::PathBuf,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file (`synap backup --out`).
    #[arg(long)]
    from: std::path::PathBuf,
    /// A new (or empty) data directory to prepare.
    #[arg(long)]
    data_dir: std::path::PathBuf,
}

#[derive(Debug, Args)]
pub struct RoomArgs {
    #[command(subcommand)]
    command: RoomCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Subcommand)]
enum RoomCommand {
    /// Change retention settings; events the new limits exclude go at once.
    Set {
        /// The room.
        room: String,
        /// Most events kept, or `none` for no limit.
        #[arg(long, value_parser = limit)]
        max_events: Option<Limit>,
        /// Oldest events kept, in seconds, or `none` for no limit.
        #[arg(long, value_parser = limit)]
        max_age_secs: Option<Limit>,
        /// Most payload bytes (data + metadata) kept, or `none` for no limit.
        #[arg(long, value_parser = limit)]
        max_bytes: Option<Limit>,
    },
}

/// A limit given on the command line: a number, or `none`.
#[derive(Debug, Clone, Copy)]
struct Limit(Option<u64>);

fn limit(text: &str) -> Result<Limit, String> {
    match text {
        "none" => Ok(Limit(None)),
        n => n.parse().map(|n| Limit(Some(n))).map_err(|_| format!("'{n}' is neither a number nor 'none'")),
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(())
}

pub async fn publish(args: PublishArgs) -> Result<(), String> {
    let data: Value = serde_json::from_str(&args.json).map_err(|e| format!("JSON argument is not valid JSON: {e}"))?;
    let mut metadata = serde_json::Map::new();
    for entry in &args.metadata {
        let (k, v) = entry.split_once('=').ok_or_else(|| format!("--metadata '{entry}' is not KEY=VALUE"))?;
        metadata.insert(k.to_owned(), Value::from(v));
    }
    let metadata = (!metadata.is_empty()).then_some(Value::Object(metadata));
    let client = args.client.client()?;
    let result = client
        .publish(&args.room, &args.event_type, &data, metadata.as_ref(), args.id.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    println!("{}", serde_json::to_string(&result).map_err(|e| e.to_string())?);
    Ok(())
}

/// Publishes the events of standard input, one JSON object per line
/// (`{"room","event","data","metadata"?,"id"?}`), over one WebSocket
/// without waiting for each; a line without `seq` gets its line number.
/// Prints every answer as it comes; fails if any publish was refused.
pub async fn publish_stream(args: PublishStreamArgs) -> Result<(), String> {
    use tokio::io::AsyncBufReadExt;

    let stream = args.client.client()?.publish_stream().await.map_err(|e| e.to_string())?;
    let (mut sender, mut receiver) = stream.split();
    let window = std::sync::Arc::new(tokio::sync::Semaphore::new(crate::client::MAX_IN_FLIGHT));
    let mut sending = {
        let window = window.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            let mut sent = 0u64;
            let mut number = 0u64;
            while let Some(line) = lines.next_line().await.map_err(|e| format!("reading standard input: {e}"))? {
                number += 1;
                if line.trim().is_empty() {
                    continue;
                }
                let mut frame: Value =
                    serde_json::from_str(&line).map_err(|e| format!("line {number} is not JSON: {e}"))?;
                let fields = frame.as_object_mut().ok_or_else(|| format!("line {number} is not a JSON object"))?;
                fields.entry("seq").or_insert(Value::from(number));
                let permit = window.clone().acquire_owned().await.map_err(|e| e.to_string())?;
                permit.forget();
                sender.send_raw(frame.to_string()).await.map_err(|e| e.to_string())?;
                sent += 1;
            }
            Ok::<_, String>((sender, sent))
        })
    };
    // The stream is closed only after the last answer: the server sends
    // nothing once it reads a close.
    let (mut answered, mut refused) = (0u64, 0u64);
    let mut finished: Option<(crate::client::PublishSender, u64)> = None;
    loop {
        if let Some((_, sent)) = &finished {
            if answered >= *sent {
                break;
            }
        }
        tokio::select! {
            done = &mut sending, if finished.is_none() => {
                finished = Some(done.map_err(|e| e.to_string())??);
            }
            answer = receiver.recv() => {
                let Some(answer) = answer else { break };
                let ack = answer.map_err(|e| e.to_string())?;
                window.add_permits(1);
                answered += 1;
                refused += u64::from(ack.outcome.is_err());
                println!("{}", ack.to_frame());
            }
        }
    }
    let Some((mut sender, sent)) = finished else {
        return Err("the server closed the stream before standard input ended".into());
    };
    // Best effort: every answer is in, so nothing is lost if the close fails.
    let _ = sender.close().await;
    if answered < sent {
        return Err(format!("the connection closed with {} of {sent} publishes unanswered", sent - answered));
    }
    if refused > 0 {
        return Err(format!("{refused} of {sent} publishes were refused"));
    }
    Ok(())
}

pub async fn history(args: HistoryArgs) -> Result<(), String> {
    let page = args.client.client()?.history(&args.room, args.from, args.limit).await.map_err(|e| e.to_string())?;
    for event in &page.events {
        println!("{}", serde_json::to_string(event).map_err(|e| e.to_string())?);
    }
    Ok(())
}

pub async fn tail(args: TailArgs) -> Result<(), String> {
    use std::io::Write;
    use std::ops::ControlFlow;

    use crate::client::{Received, StartAt, SubscribeOptions};

    let from = StartAt::from_query(args.from);
    let client = args.access.client(&args.url)?;
    if let Some(name) = &args.consumer {
        let consumer = client.consumer(&args.room, name);
        loop {
            // A closed stdout ends the tail (the messages printed so far
            // are acked; the rest come back when their lease ends).
            if !print_and_settle(&consumer, 100, std::time::Duration::from_secs(5), true).await? {
                return Ok(());
            }
        }
    }
    let options = SubscribeOptions { types: args.types };
    let mut stdout = std::io::stdout().lock();
    client
        .subscribe(&args.room, from, options, |received| {
            let written = match received {
                Received::Event(event) => serde_json::to_string(&event)
                    .map_err(std::io::Error::other)
                    .and_then(|line| writeln!(stdout, "{line}"))
                    .and_then(|()| stdout.flush()),
                Received::Gap { requested, earliest } => {
                    eprintln!("gap: offsets {requested}..{earliest} were trimmed before delivery");
                    Ok(())
                }
            };
            // A closed stdout (e.g. `| head`) ends the tail.
            if written.is_err() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await
        .map_err(|e| e.to_string())
}

/// Fetches once from `consumer`, prints each message as a JSON line, then
/// acks them (or, without `ack`, hands them back). False once stdout is
/// closed.
async fn print_and_settle(
    consumer: &crate::client::Consumer,
    max: u32,
    wait: std::time::Duration,
    ack: bool,
) -> Result<bool, String> {
    use std::io::Write;

    let fetch = consumer.fetch(max, wait).await.map_err(|e| e.to_string())?;
    for gap in &fetch.missed {
        eprintln!("missed: offsets {}..{} were trimmed before they were done", gap.from, gap.to);
    }
    let mut printed = Vec::new();
    let mut open = true;
    {
        let mut stdout = std::io::stdout().lock();
        for message in &fetch.messages {
            let line = serde_json::to_string(message).map_err(|e| e.to_string())?;
            if writeln!(stdout, "{line}").and_then(|()| stdout.flush()).is_err() {
                open = false;
                break;
            }
            printed.push(message.event.offset);
        }
    }
    if !printed.is_empty() {
        if ack {
            consumer.ack(&printed).await.map_err(|e| e.to_string())?;
        } else {
            consumer.nak(&printed, std::time::Duration::ZERO).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(open)
}

pub async fn consumer(args: ConsumerArgs) -> Result<(), String> {
    use crate::client::{ConsumerOptions, NamedStart, StartSpec};

    let client = args.client.client()?;
    match args.command {
        ConsumerCommand::Add { room, name, settings } => {
            let start = match settings.start.as_deref() {
                None => None,
                Some("earliest") => Some(StartSpec::Named(NamedStart::Earliest)),
                Some("latest") => Some(StartSpec::Named(NamedStart::Latest)),
                Some(offset) => Some(StartSpec::Offset(
                    offset.parse().map_err(|_| format!("--start '{offset}' is not earliest, latest or an offset"))?,
                )),
            };
            let options = ConsumerOptions {
                start,
                types: settings.types,
                ack_wait_ms: settings.ack_wait_ms,
                max_deliver: settings.max_deliver,
                dead_letter: settings.dead_letter,
                max_ack_pending: settings.max_ack_pending,
            };
            print_json(&client.consumer(&room, &name).create(&options).await.map_err(|e| e.to_string())?)
        }
        ConsumerCommand::Ls { room } => {
            for info in client.consumers(&room).await.map_err(|e| e.to_string())? {
                println!("{}", serde_json::to_string(&info).map_err(|e| e.to_string())?);
            }
            Ok(())
        }
        ConsumerCommand::Info { room, name } => {
            print_json(&client.consumer(&room, &name).info().await.map_err(|e| e.to_string())?)
        }
        ConsumerCommand::Rm { room, name } => {
            client.consumer(&room, &name).delete().await.map_err(|e| e.to_string())?;
            println!("deleted");
            Ok(())
        }
    }
}

/// `synap consume`: one fetch, printed, then acked (or handed back).
pub async fn consume(args: ConsumeArgs) -> Result<(), String> {
    let client = args.access.client(&args.url)?;
    let consumer = client.consumer(&args.room, &args.name);
    print_and_settle(&consumer, args.max, std::time::Duration::from_millis(args.wait_ms), !args.no_ack)
        .await
        .map(|_| ())
}

pub async fn rooms(args: ClientArgs) -> Result<(), String> {
    for room in args.client()?.rooms().await.map_err(|e| e.to_string())? {
        println!("{room}");
    }
    Ok(())
}

pub async fn stats(args: StatsArgs) -> Result<(), String> {
    print_json(&args.client.client()?.stats(&args.room).await.map_err(|e| e.to_string())?)
}

pub async fn cluster(args: ClusterArgs) -> Result<(), String> {
    let client = args.client.client()?;
    let answer = match args.command {
        ClusterCommand::Status => return print_json(&client.cluster_status().await.map_err(|e| e.to_string())?),
        ClusterCommand::Init => client.cluster_init().await,
        ClusterCommand::AddLearner { id, url } => client.add_learner(id, &url).await,
        ClusterCommand::Promote { id } => client.promote(id).await,
        ClusterCommand::Remove { id } => client.remove(id).await,
        ClusterCommand::Snapshot => client.snapshot().await,
    };
    print_json(&answer.map_err(|e| e.to_string())?)
}

pub async fn health(args: HealthArgs) -> Result<(), String> {
    let client = match &args.target {
        Some(url) => args.client.access.client(&[url])?,
        None => args.client.client()?,
    };
    client.ready().await.map_err(|e| format!("{} is not ready: {e}", client.base_url()))?;
    println!("ready");
    Ok(())
}

pub async fn backup(args: BackupArgs) -> Result<(), String> {
    let checked = args.client.client()?.backup(&args.out).await.map_err(|e| e.to_string())?;
    print_json(&serde_json::json!({
        "file": args.out,
        "bytes": checked.snapshot_bytes + crate::store::backup::TRAILER_LEN,
        "crc32": format!("{:08x}", checked.crc32),
    }))
}

pub fn restore(args: RestoreArgs) -> Result<(), String> {
    let prepared = crate::node::restore::prepare(&args.from, &args.data_dir).map_err(|e| e.to_string())?;
    print_json(&prepared)
}

pub async fn room(args: RoomArgs) -> Result<(), String> {
    match args.command {
        RoomCommand::Set { room, max_events, max_age_secs, max_bytes } => {
            let change = crate::command::RoomChange {
                max_events: max_events.map(|l| l.0),
                max_age_secs: max_age_secs.map(|l| l.0),
                max_bytes: max_bytes.map(|l| l.0),
            };
            print_json(&args.client.client()?.update_room(&room, &change).await.map_err(|e| e.to_string())?)
        }
    }
}

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write into: ca.pem and ca.key (kept if there), then
    /// NAME.pem and NAME.key per name.
    #[arg(long)]
    out: PathBuf,
    /// A node's name (repeatable, or comma-separated): its file names and
    /// a DNS name in its certificate.
    #[arg(long = "name", value_delimiter = ',', required = true)]
    names: Vec<String>,
    /// Another DNS name or IP address every certificate holds
    /// (repeatable, or comma-separated), e.g. 127.0.0.1,localhost.
    #[arg(long = "host", value_delimiter = ',')]
    hosts: Vec<String>,
}

/// `synap certs`: a throwaway CA and node certificates.
pub fn certs(args: CertsArgs) -> Result<(), String> {
    let made = crate::tls::certs::make(&args.out, &args.names, &args.hosts).map_err(|e| e.to_string())?;
    let nodes: Vec<_> = made.nodes.iter().map(|(cert, key)| serde_json::json!({ "cert": cert, "key": key })).collect();
    print_json(&serde_json::json!({ "ca": made.ca, "new_ca": made.new_ca, "nodes": nodes }))
}
