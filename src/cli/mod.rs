//! The `synap` command line: the server (`serve`) and the client
//! subcommands (`docs/operations.md`, "Command line").

mod bench;
mod client_cmds;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::api::auth::Auth;
use crate::base_url::BaseUrl;
use crate::command::MAX_REQUEST_BYTES;
use crate::node::{NodeConfig, RoomDefaults};
use crate::raft::NodeId;
use crate::tls::TlsFiles;

/// Synap: a clustered, replicated event-stream server.
#[derive(Debug, Parser)]
#[command(name = "synap", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node.
    Serve(Box<ServeArgs>),
    /// Publish one event.
    Publish(client_cmds::PublishArgs),
    /// Publish the events of standard input (JSON lines) over one WebSocket,
    /// pipelined; print each answer.
    PublishStream(client_cmds::PublishStreamArgs),
    /// Print a room's events, one JSON object per line.
    History(client_cmds::HistoryArgs),
    /// Follow a room live, one JSON object per line; never exits on its own.
    Tail(client_cmds::TailArgs),
    /// List rooms.
    Rooms(client_cmds::ClientArgs),
    /// Change a room's settings.
    Room(client_cmds::RoomArgs),
    /// Show a room's statistics.
    Stats(client_cmds::StatsArgs),
    /// Create, list, inspect or delete durable consumers.
    Consumer(client_cmds::ConsumerArgs),
    /// Fetch from a durable consumer, print the messages (JSON lines) and
    /// ack them.
    Consume(client_cmds::ConsumeArgs),
    /// Inspect or change the cluster.
    Cluster(client_cmds::ClusterArgs),
    /// Exit 0 if the node is ready (has a leader and is caught up).
    Health(client_cmds::HealthArgs),
    /// Save a consistent copy of a node's whole state to a file (admin key).
    Backup(client_cmds::BackupArgs),
    /// Prepare a new data directory from a backup; `synap serve` on it
    /// starts a one-node cluster holding that state.
    Restore(client_cmds::RestoreArgs),
    /// Generate load and print a report.
    Bench(bench::BenchArgs),
    /// Make a throwaway CA (reused if DIR has one) and certificates for
    /// nodes, for tests and local TLS clusters.
    Certs(client_cmds::CertsArgs),
}

/// `synap serve` flags. Each has a `SYNAP_*` environment twin.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Log lines as text (`pretty`) or one JSON object per line (`json`),
    /// on standard error; `SYNAP_LOG` filters them (e.g. `synap=debug`).
    #[arg(long, env = "SYNAP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    /// This node's id.
    #[arg(long, env = "SYNAP_ID", default_value_t = 1)]
    id: NodeId,
    /// Address to listen on.
    #[arg(long, env = "SYNAP_LISTEN", default_value = "127.0.0.1:15500")]
    listen: SocketAddr,
    /// URL other nodes use to reach this one (default: http://LISTEN).
    #[arg(long, env = "SYNAP_ADVERTISE")]
    advertise: Option<String>,
    /// Data directory.
    #[arg(long, env = "SYNAP_DATA_DIR", default_value = "./synap-data")]
    data_dir: PathBuf,
    /// Initial voters: 1=URL,2=URL,3=URL (including this node).
    #[arg(long, env = "SYNAP_PEERS")]
    peers: Option<String>,
    /// Join a running cluster through this member's URL.
    #[arg(long, env = "SYNAP_JOIN", conflicts_with = "peers")]
    join: Option<String>,
    /// API key with full access (repeatable; SYNAP_API_KEY may hold a
    /// comma-separated list). No keys: the API is open.
    #[arg(long = "api-key", env = "SYNAP_API_KEY", value_delimiter = ',')]
    api_keys: Vec<String>,
    /// TOML file of API keys with permissions and room patterns.
    #[arg(long, env = "SYNAP_AUTH_FILE")]
    auth_file: Option<PathBuf>,
    /// Serve HTTPS and WSS with this certificate chain (PEM); needs
    /// --tls-key. Peer URLs are then https://.
    #[arg(long, env = "SYNAP_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "SYNAP_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA certificate(s) (PEM) that peers' certificates are checked
    /// against (default: the system's roots).
    #[arg(long, env = "SYNAP_TLS_CA", requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM) on /raft/*
    /// (mutual TLS between nodes); this node then presents --tls-cert to
    /// its peers. Set it on every node or none.
    #[arg(long, env = "SYNAP_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Shared secret required on internal (/raft) requests.
    #[arg(long, env = "SYNAP_CLUSTER_SECRET")]
    cluster_secret: Option<String>,
    /// How long a write may wait for a leader and a commit, in milliseconds.
    #[arg(long, env = "SYNAP_WRITE_TIMEOUT_MS", default_value_t = 5000)]
    write_timeout_ms: u64,
    /// Largest event (data + metadata) in bytes.
    #[arg(long, env = "SYNAP_MAX_EVENT_BYTES", default_value_t = 1024 * 1024)]
    max_event_bytes: usize,
    /// Most bytes of writes waiting to be proposed (or forwarded) before
    /// more are refused with 503 and Retry-After.
    #[arg(long, env = "SYNAP_MAX_QUEUED_WRITE_BYTES", default_value_t = 64 * 1024 * 1024)]
    max_queued_write_bytes: usize,
    /// Rooms created without a max_events (by a publish, or a create that
    /// does not say) keep at most this many events.
    #[arg(long, env = "SYNAP_DEFAULT_MAX_EVENTS", value_parser = clap::value_parser!(u64).range(1..))]
    default_max_events: Option<u64>,
    /// Rooms created without a max_age_secs drop events older than this
    /// many seconds.
    #[arg(long, env = "SYNAP_DEFAULT_MAX_AGE_SECS", value_parser = clap::value_parser!(u64).range(1..))]
    default_max_age_secs: Option<u64>,
    /// Rooms created without a max_bytes keep at most this many payload
    /// bytes.
    #[arg(long, env = "SYNAP_DEFAULT_MAX_BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    default_max_bytes: Option<u64>,
    /// Refuse publishes to rooms that do not exist instead of creating them.
    #[arg(long, env = "SYNAP_NO_AUTO_CREATE")]
    no_auto_create: bool,
    /// How long a publish `id` is remembered: a second publish with the
    /// same id in the same room within this many seconds returns the
    /// original offset and appends nothing.
    #[arg(long, env = "SYNAP_DEDUP_WINDOW_SECS", default_value_t = 120)]
    dedup_window_secs: u64,
    /// Most live subscribers (WebSocket + SSE) this node serves at once.
    #[arg(long, env = "SYNAP_MAX_SUBSCRIBERS", default_value_t = 10_000)]
    max_subscribers: usize,
    /// Disconnect a subscriber whose socket accepts nothing for this many
    /// seconds (it can resume from its last offset).
    #[arg(long, env = "SYNAP_SUBSCRIBER_SEND_TIMEOUT_SECS", default_value_t = 30)]
    subscriber_send_timeout_secs: u64,
    /// Snapshot the state (and purge the log behind it) every N log
    /// entries; 0 = never.
    #[arg(long, env = "SYNAP_SNAPSHOT_EVERY", default_value_t = 20_000)]
    snapshot_every: u64,
    /// Memory for the applied state's page cache, in MiB (sled's own
    /// accounting: the process holds more than this). Reads of history
    /// older than the cache go to the OS page cache.
    #[arg(long, env = "SYNAP_STORE_CACHE_MB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    store_cache_mb: u64,
    /// Threads running the node's async work; 0 = one per core. Nodes that
    /// share a host's cores spend less CPU per publish with fewer
    /// (docs/operations.md, "Co-located nodes").
    #[arg(long, env = "SYNAP_WORKER_THREADS", default_value_t = 0)]
    worker_threads: usize,
    /// UNSAFE, for testing the durability checks only: never fsync. A
    /// power cut then loses acknowledged writes.
    #[arg(long, env = "SYNAP_UNSAFE_NO_FSYNC", hide = true)]
    unsafe_no_fsync: bool,
    /// For testing clock skew only: add this many milliseconds (may be
    /// negative) to this node's wall clock.
    #[arg(long, env = "SYNAP_UNSAFE_CLOCK_OFFSET_MS", hide = true, default_value_t = 0, allow_hyphen_values = true)]
    unsafe_clock_offset_ms: i64,
}

/// Why the command line was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

/// Parses `1=URL,2=URL`.
pub fn parse_peers(spec: &str) -> Result<BTreeMap<NodeId, BaseUrl>, UsageError> {
    let mut peers = BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, url) = part.split_once('=').ok_or_else(|| UsageError(format!("--peers: '{part}' is not ID=URL")))?;
        let id: NodeId = id.trim().parse().map_err(|_| UsageError(format!("--peers: '{id}' is not a node id")))?;
        let url = BaseUrl::parse(url).map_err(|e| UsageError(format!("--peers: {e}")))?;
        if peers.insert(id, url).is_some() {
            return Err(UsageError(format!("--peers: node {id} is listed twice")));
        }
    }
    Ok(peers)
}

impl ServeArgs {
    fn into_config(self) -> Result<NodeConfig, UsageError> {
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key, ca: self.tls_ca, client_ca: self.tls_client_ca }),
            _ => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let advertise = self.advertise.unwrap_or_else(|| format!("{scheme}://{}", self.listen));
        let advertise = BaseUrl::parse(&advertise).map_err(|e| UsageError(format!("--advertise: {e}")))?;
        let join = match &self.join {
            Some(url) => Some(BaseUrl::parse(url).map_err(|e| UsageError(format!("--join: {e}")))?),
            None => None,
        };
        let peers = match &self.peers {
            Some(spec) => parse_peers(spec)?,
            None => BTreeMap::new(),
        };
        if self.max_event_bytes > MAX_REQUEST_BYTES {
            return Err(UsageError(format!(
                "--max-event-bytes is at most {MAX_REQUEST_BYTES}: a larger event would not replicate within a \
                 heartbeat interval"
            )));
        }
        if tls.is_some() {
            let plain = std::iter::once(("--advertise", &advertise))
                .chain(join.iter().map(|url| ("--join", url)))
                .chain(peers.values().map(|url| ("--peers", url)))
                .find(|(_, url)| !url.as_str().starts_with("https://"));
            if let Some((flag, url)) = plain {
                return Err(UsageError(format!("{flag}: {url} is not https:// but this node serves TLS")));
            }
        }
        if !peers.is_empty() && !peers.contains_key(&self.id) {
            return Err(UsageError(format!("--peers does not list this node's id {}", self.id)));
        }
        Ok(NodeConfig {
            id: self.id,
            listen: self.listen,
            advertise,
            data_dir: self.data_dir,
            peers,
            join,
            join_api_key: None,
            cluster_secret: self.cluster_secret.filter(|s| !s.is_empty()),
            write_timeout: Duration::from_millis(self.write_timeout_ms.max(1)),
            max_event_bytes: self.max_event_bytes,
            max_queued_write_bytes: self.max_queued_write_bytes.max(1),
            auto_create_rooms: !self.no_auto_create,
            max_subscribers: self.max_subscribers,
            dedup_window: Duration::from_secs(self.dedup_window_secs),
            subscriber_send_timeout: Duration::from_secs(self.subscriber_send_timeout_secs.max(1)),
            snapshot_every: self.snapshot_every,
            store_cache_bytes: self.store_cache_mb * 1024 * 1024,
            tls,
            room_defaults: RoomDefaults {
                max_events: self.default_max_events,
                max_age_secs: self.default_max_age_secs,
                max_bytes: self.default_max_bytes,
            },
        })
    }
}

impl Cli {
    /// How many runtime worker threads the command wants; `None` leaves
    /// tokio's default (one per core).
    pub fn worker_threads(&self) -> Option<usize> {
        match &self.command {
            Command::Serve(args) if args.worker_threads > 0 => Some(args.worker_threads),
            _ => None,
        }
    }
}

/// Runs the command line; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    let outcome = match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Publish(args) => client_cmds::publish(args).await,
        Command::PublishStream(args) => client_cmds::publish_stream(args).await,
        Command::History(args) => client_cmds::history(args).await,
        Command::Tail(args) => client_cmds::tail(args).await,
        Command::Rooms(args) => client_cmds::rooms(args).await,
        Command::Stats(args) => client_cmds::stats(args).await,
        Command::Room(args) => client_cmds::room(args).await,
        Command::Consumer(args) => client_cmds::consumer(args).await,
        Command::Consume(args) => client_cmds::consume(args).await,
        Command::Cluster(args) => client_cmds::cluster(args).await,
        Command::Health(args) => client_cmds::health(args).await,
        Command::Backup(args) => client_cmds::backup(args).await,
        Command::Restore(args) => client_cmds::restore(args),
        Command::Bench(args) => bench::run(args).await,
        Command::Certs(args) => client_cmds::certs(args),
    };
    match outcome {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("error: {message}");
            1
        }
    }
}

/// A clustered node serves `/raft/*`, which takes writes past validation
/// and keys, snapshots that replace the state, and votes: with API keys it
/// must be closed by the cluster secret, and without keys it is at least
/// said out loud.
fn check_internal_routes_are_closed(config: &NodeConfig, auth: &Auth) -> Result<(), String> {
    let clustered = config.peers.keys().any(|id| *id != config.id) || config.join.is_some();
    if !clustered || config.cluster_secret.is_some() {
        return Ok(());
    }
    if !auth.is_open() {
        return Err("a clustered node with API keys needs --cluster-secret: without it anyone who can reach \
                    this port can write through /raft/* past the keys, replace the state or disturb elections"
            .into());
    }
    tracing::warn!(
        "no --cluster-secret: /raft/* (forwarded writes, snapshots, votes) is open to anyone who can reach \
         {}; set a secret on every node",
        config.listen
    );
    Ok(())
}

/// How `serve` writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SYNAP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("synap=info,openraft=warn"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => logs.json().init(),
        // Colours only for a person at a terminal, not in files.
        LogFormat::Pretty => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
    }
    let auth = Auth::load(&args.api_keys, args.auth_file.as_deref()).map_err(|e| e.to_string())?;
    if args.unsafe_clock_offset_ms != 0 {
        crate::clock::set_unsafe_offset_ms(args.unsafe_clock_offset_ms);
        tracing::warn!(ms = args.unsafe_clock_offset_ms, "--unsafe-clock-offset-ms: this node's clock is skewed");
    }
    if args.unsafe_no_fsync {
        crate::durable::set_unsafe_no_fsync(true);
        tracing::warn!("--unsafe-no-fsync: nothing is synced to disk; a power cut loses acknowledged writes");
    }
    let mut config = args.into_config().map_err(|e| e.to_string())?;
    check_internal_routes_are_closed(&config, &auth)?;
    config.join_api_key = auth.admin_key();
    crate::server::serve(config, auth).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(args: &[&str]) -> Option<usize> {
        Cli::try_parse_from(args).expect("valid arguments").worker_threads()
    }

    #[test]
    fn a_node_runs_the_workers_it_is_given_or_one_per_core() {
        assert_eq!(workers(&["synap", "serve", "--worker-threads", "3"]), Some(3));
        assert_eq!(workers(&["synap", "serve", "--worker-threads", "0"]), None, "0: tokio's one per core");
        assert_eq!(workers(&["synap", "rooms"]), None, "clients keep tokio's default");
    }
}
