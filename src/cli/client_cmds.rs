//! The client subcommands: thin wrappers over [`crate::client::Client`]
//! that print JSON and turn errors into one line and exit code 1.

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::client::Client;

/// Options every client subcommand takes.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Base URL of any node.
    #[arg(long, global = true, env = "SYNAP_URL", default_value = "http://127.0.0.1:15500")]
    url: String,
    /// API key, sent as a bearer token.
    #[arg(long, global = true, env = "SYNAP_API_KEY")]
    api_key: Option<String>,
}

impl ClientArgs {
    fn client(&self) -> Client {
        Client::new(&self.url).with_api_key(self.api_key.clone())
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
    /// API key, sent as a bearer token.
    #[arg(long, env = "SYNAP_API_KEY")]
    api_key: Option<String>,
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
    let client = args.client.client();
    let result = client
        .publish(&args.room, &args.event_type, &data, metadata.as_ref(), args.id.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    println!("{}", serde_json::to_string(&result).map_err(|e| e.to_string())?);
    Ok(())
}

pub async fn history(args: HistoryArgs) -> Result<(), String> {
    let page = args.client.client().history(&args.room, args.from, args.limit).await.map_err(|e| e.to_string())?;
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
    let client = Client::cluster(&args.url).with_api_key(args.api_key);
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

pub async fn rooms(args: ClientArgs) -> Result<(), String> {
    for room in args.client().rooms().await.map_err(|e| e.to_string())? {
        println!("{room}");
    }
    Ok(())
}

pub async fn stats(args: StatsArgs) -> Result<(), String> {
    print_json(&args.client.client().stats(&args.room).await.map_err(|e| e.to_string())?)
}

pub async fn cluster(args: ClusterArgs) -> Result<(), String> {
    let client = args.client.client();
    let answer = match args.command {
        ClusterCommand::Status => return print_json(&client.cluster_status().await.map_err(|e| e.to_string())?),
        ClusterCommand::Init => client.cluster_init().await,
        ClusterCommand::AddLearner { id, url } => client.add_learner(id, &url).await,
        ClusterCommand::Promote { id } => client.promote(id).await,
        ClusterCommand::Remove { id } => client.remove(id).await,
    };
    print_json(&answer.map_err(|e| e.to_string())?)
}

pub async fn health(args: HealthArgs) -> Result<(), String> {
    let client = match &args.target {
        Some(url) => Client::new(url).with_api_key(args.client.api_key.clone()),
        None => args.client.client(),
    };
    client.ready().await.map_err(|e| format!("{} is not ready: {e}", client.base_url()))?;
    println!("ready");
    Ok(())
}
