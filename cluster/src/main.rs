//! `synap-chaos`: runs a workload against a real Synap cluster while
//! injecting faults, then checks every guarantee of `docs/architecture.md` and prints a
//! report. Exits 1 if any guarantee was broken, 2 if the run itself could
//! not be carried out.

mod checker;
mod nemesis;
mod target;
mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use rand::{Rng, SeedableRng};

use checker::{Histories, Kind, Violation};
use nemesis::{Fault, Injected, Nemesis};
use target::{LocalOptions, Target};
use workload::{Outcome, PublishOp, Settings, Workload};

/// Nodes must agree this soon after the faults heal.
const CONVERGE_WITHIN: Duration = Duration::from_secs(10);

#[derive(Debug, Parser)]
#[command(name = "synap-chaos", about = "Workload + faults + checker against a real Synap cluster")]
struct Args {
    /// `local` (synap processes on 127.0.0.1) or `compose` (the running
    /// cluster of deploy/docker-compose.yml, ports 15501-15503).
    #[arg(long, default_value = "local")]
    target: String,
    /// The synap binary for the local target (default: next to this one).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Nodes to start (local) or expect (compose).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Seconds of workload under faults.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Seed of the fault schedule and the workload's choices (default: random,
    /// printed so the run can be repeated).
    #[arg(long)]
    seed: Option<u64>,
    /// Faults to inject: kill, pause, partition, restart-all, membership,
    /// powercut.
    #[arg(long, default_value = "kill,pause", value_delimiter = ',')]
    faults: Vec<String>,
    /// Run the local nodes with `--unsafe-no-fsync`: a `powercut` run must
    /// then report lost writes (it proves the checker catches them).
    #[arg(long)]
    unsafe_no_fsync: bool,
    /// Extra `synap serve` argument for every local node (repeatable), e.g.
    /// `--node-arg=--snapshot-every=500`.
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    node_args: Vec<String>,
    /// Publisher tasks (half publish with ids and retry).
    #[arg(long, default_value_t = 6)]
    publishers: usize,
    /// Subscriber tasks (half WebSocket, half SSE).
    #[arg(long, default_value_t = 4)]
    subscribers: usize,
    /// Rooms.
    #[arg(long, default_value_t = 3)]
    rooms: usize,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let code = match run(args).await {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("synap-chaos: {e}");
            2
        }
    };
    std::process::exit(code);
}

fn default_binary() -> PathBuf {
    let beside = std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.join("synap")));
    match beside {
        Some(path) if path.exists() => path,
        _ => PathBuf::from("target/release/synap"),
    }
}

async fn run(args: Args) -> Result<bool, String> {
    let seed = args.seed.unwrap_or_else(|| rand::rngs::SmallRng::from_os_rng().random());
    let mut faults = Vec::new();
    for name in &args.faults {
        faults.push(Fault::parse(name)?);
    }
    let mut node_args = args.node_args.clone();
    if args.unsafe_no_fsync {
        node_args.push("--unsafe-no-fsync".into());
    }
    let local = LocalOptions { power_cuts: faults.contains(&Fault::PowerCut), node_args };
    let mut target = match args.target.as_str() {
        "local" => Target::local(args.binary.clone().unwrap_or_else(default_binary), args.nodes, local)?,
        "compose" => Target::compose(args.nodes)?,
        other => return Err(format!("unknown target '{other}' (local, compose)")),
    };
    println!("synap-chaos: target {}, {} nodes, {} s, seed {seed}", target.name(), args.nodes, args.duration);
    if faults.contains(&Fault::Partition) && !target.can_partition() {
        println!("partition: the local target has no network control (all nodes share 127.0.0.1); skipped");
        faults.retain(|f| *f != Fault::Partition);
    }
    if faults.contains(&Fault::PowerCut) && !target.can_cut_power() {
        println!("powercut: needs the local target (data directories on power-cut disks); skipped");
        faults.retain(|f| *f != Fault::PowerCut);
    }
    if faults.contains(&Fault::Membership) && !target.can_change_membership() {
        println!("membership: not available on the compose target (fixed services); skipped");
        faults.retain(|f| *f != Fault::Membership);
    }
    println!("faults: {}", faults.iter().map(|f| f.name()).collect::<Vec<_>>().join(", "));
    target.wait_ready(Duration::from_secs(60)).await?;

    let rooms: Vec<String> = (0..args.rooms).map(|i| format!("chaos-{seed}-{i}")).collect();
    let settings = Settings { publishers: args.publishers, subscribers: args.subscribers, rooms: rooms.clone(), seed };
    let urls = target.live_urls();
    let started = Instant::now();
    let mut workload = Workload::start(&settings, urls.clone());
    let members: Vec<u64> = target.nodes.iter().map(|n| n.id).collect();
    let mut nemesis = Nemesis::new(faults, seed, members);
    let mut injected: Vec<Injected> = Vec::new();
    let mut pause_rng = rand::rngs::SmallRng::seed_from_u64(seed ^ 0x5eed);
    let run_for = Duration::from_secs(args.duration);
    // A quiet start, so the first fault hits a cluster under load.
    tokio::time::sleep(Duration::from_secs(2).min(run_for)).await;
    while started.elapsed() + Duration::from_secs(5) < run_for {
        match nemesis.strike(&mut target, started).await {
            Ok(Some(fault)) => {
                println!("  {:>6.1}s {:<11} {} (held {:.1} s)", fault.at, fault.fault.name(), fault.what, fault.held);
                injected.push(fault);
            }
            Ok(None) => {}
            Err(e) => println!("  fault failed: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(pause_rng.random_range(1000..3000))).await;
    }
    if let Some(rest) = run_for.checked_sub(started.elapsed()) {
        tokio::time::sleep(rest).await;
    }

    target.heal(&nemesis.members)?;
    let ops = workload.stop_publishers().await;
    let publishing_ended = Instant::now();
    let mut violations: Vec<Violation> = Vec::new();

    // Convergence: every member ready and holding the same number of events.
    let member_urls: Vec<String> =
        target.nodes.iter().filter(|n| nemesis.members.contains(&n.id)).map(|n| n.url.clone()).collect();
    let converged = converge(&member_urls, &rooms, Duration::from_secs(60)).await;
    match converged {
        Some(took) if took <= CONVERGE_WITHIN => println!("converged {:.1} s after healing", took.as_secs_f64()),
        Some(took) => violations.push(Violation {
            kind: Kind::Convergence,
            detail: format!(
                "nodes converged {:.1} s after healing (limit {} s)",
                took.as_secs_f64(),
                CONVERGE_WITHIN.as_secs()
            ),
        }),
        None => violations
            .push(Violation { kind: Kind::Convergence, detail: "nodes had not converged 60 s after healing".into() }),
    }

    let histories = read_histories(&member_urls, &rooms, &mut violations).await;
    // Give subscribers time to reach the end of their rooms.
    let reference_len: BTreeMap<String, usize> =
        histories.iter().map(|(room, per_node)| (room.clone(), per_node.values().next().map_or(0, Vec::len))).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let behind =
            workload.subscriber_progress().iter().any(|(room, n)| *n < reference_len.get(room).copied().unwrap_or(0));
        if !behind {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let subscribers = workload.stop_subscribers().await;
    for sub in &subscribers {
        let want = reference_len.get(&sub.room).copied().unwrap_or(0);
        if sub.received.len() < want {
            violations.push(Violation {
                kind: Kind::Subscriber,
                detail: format!(
                    "{} on {} received {} of {want} events within 20 s of the end{}",
                    sub.name,
                    sub.room,
                    sub.received.len(),
                    sub.error.as_ref().map(|e| format!(" (stopped: {e})")).unwrap_or_default()
                ),
            });
        }
    }
    violations.extend(checker::check(&ops, &histories, &subscribers));
    report(&ops, &injected, &subscribers, &violations, started, publishing_ended);
    if !violations.is_empty() {
        println!("{}", target.log_tails(15));
    }
    Ok(violations.is_empty())
}

/// Waits until every node is ready and all hold the same count of every
/// room; returns how long that took.
async fn converge(urls: &[String], rooms: &[String], limit: Duration) -> Option<Duration> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().ok()?;
    let started = Instant::now();
    while started.elapsed() < limit {
        let mut counts = Vec::new();
        let mut all_ready = true;
        for url in urls {
            all_ready &= http.get(format!("{url}/ready")).send().await.is_ok_and(|r| r.status().is_success());
            let mut per_room = Vec::new();
            for room in rooms {
                let stats = http.get(format!("{url}/stream/{room}/stats")).send().await;
                let next = match stats {
                    Ok(r) if r.status().is_success() => {
                        r.json::<serde_json::Value>().await.ok().and_then(|v| v["next_offset"].as_u64())
                    }
                    Ok(r) if r.status() == 404 => Some(0),
                    _ => None,
                };
                per_room.push(next);
            }
            counts.push(per_room);
        }
        if all_ready && counts.iter().all(|c| c.iter().all(Option::is_some)) && counts.windows(2).all(|w| w[0] == w[1])
        {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Every node's history of every room. A node that cannot be read is a
/// violation (a node must come back from every fault) and is left out.
async fn read_histories(urls: &[String], rooms: &[String], violations: &mut Vec<Violation>) -> Histories {
    let mut histories = Histories::new();
    let mut down = BTreeMap::new();
    for room in rooms {
        for (i, url) in urls.iter().enumerate() {
            let node = i as u64 + 1;
            if down.contains_key(&node) {
                continue;
            }
            let client = synap::client::Client::new(url);
            let events = match client.history_all(room).await {
                Ok(events) => events,
                Err(synap::client::ClientError::Http { status: 404, .. }) => Vec::new(),
                Err(e) => {
                    down.insert(node, format!("node {node} could not be read at the end ({room}): {e}"));
                    continue;
                }
            };
            histories.entry(room.clone()).or_default().insert(node, events);
        }
    }
    violations.extend(down.into_values().map(|detail| Violation { kind: Kind::NodeDown, detail }));
    histories
}

fn report(
    ops: &[PublishOp],
    injected: &[Injected],
    subscribers: &[workload::SubscriberLog],
    violations: &[Violation],
    started: Instant,
    ended: Instant,
) {
    let acked: Vec<&PublishOp> = ops.iter().filter(|o| matches!(o.outcome, Outcome::Ok { .. })).collect();
    let failed = ops.iter().filter(|o| matches!(o.outcome, Outcome::Failed(_))).count();
    let unknown = ops.iter().filter(|o| matches!(o.outcome, Outcome::Unknown(_))).count();
    let retried = ops.iter().filter(|o| o.attempts > 1).count();
    println!("\n===== synap-chaos report =====");
    println!(
        "publishes: {} attempted, {} acknowledged, {} failed, {} unknown ({} needed retries)",
        ops.len(),
        acked.len(),
        failed,
        unknown,
        retried
    );
    let mut by_fault: BTreeMap<&str, usize> = BTreeMap::new();
    for f in injected {
        *by_fault.entry(f.fault.name()).or_default() += 1;
    }
    println!("faults injected: {} {by_fault:?}", injected.len());
    let received: usize = subscribers.iter().map(|s| s.received.len()).sum();
    println!("subscribers: {} ({} events received)", subscribers.len(), received);

    // Availability: share of one-second windows with an acknowledgement;
    // the longest stretch without one bounds leader elections and stalls.
    let span = ended.saturating_duration_since(started);
    let windows = span.as_secs().max(1) as usize;
    let mut with_ack = vec![false; windows];
    let mut completions: Vec<Duration> = acked.iter().map(|o| o.completed.saturating_duration_since(started)).collect();
    completions.sort();
    for c in &completions {
        if let Some(w) = with_ack.get_mut(c.as_secs() as usize) {
            *w = true;
        }
    }
    let available = with_ack.iter().filter(|w| **w).count() as f64 / windows as f64;
    let mut max_gap = Duration::ZERO;
    let mut previous = Duration::ZERO;
    for c in completions.iter().chain(std::iter::once(&span)) {
        max_gap = max_gap.max(c.saturating_sub(previous));
        previous = *c;
    }
    println!("availability: {:.1}% of one-second windows had an acknowledged publish", available * 100.0);
    println!("longest stretch without an acknowledgement (elections, stalls): {:.2} s", max_gap.as_secs_f64());
    if violations.is_empty() {
        println!("violations: none — every checked guarantee held");
    } else {
        let mut by_kind: BTreeMap<String, Vec<&Violation>> = BTreeMap::new();
        for v in violations {
            by_kind.entry(format!("{:?}", v.kind)).or_default().push(v);
        }
        println!("violations: {}", violations.len());
        for (kind, list) in by_kind {
            println!("  {kind}: {}", list.len());
            for v in list.iter().take(3) {
                println!("    e.g. {}", v.detail);
            }
        }
    }
}
