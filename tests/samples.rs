//! The event-broadcasting sample's services, run against a three-node
//! cluster as a user would run them: the broadcaster publishes checkouts,
//! two copies of the Python email service share the consumer `email`, the
//! analytics service follows by push and survives the loss of its node,
//! the saga runs to its end, and the replay finds the failed payments.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(60);

/// A built example program (`cargo test` builds the examples).
fn example(name: &str) -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_synap"));
    let path = bin.parent().expect("target directory").join("examples").join(name);
    assert!(path.exists(), "{} is not built: run `cargo build --examples`", path.display());
    path
}

/// A running program whose output lines are collected as they come.
struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// Ends once the program's stdout closes.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(command: &mut Command) -> Running {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start the program");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Running { child, lines, reader: Some(reader) }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits for the program to exit by itself; its exit status must be 0.
    async fn finish(mut self, what: &str) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "{what} exited with {status}; output:\n{}", self.lines().join("\n"));
                // Every line is in once the reader has seen the pipe close.
                if let Some(reader) = self.reader.take() {
                    tokio::task::spawn_blocking(move || reader.join()).await.expect("join").expect("reader");
                }
                return self.lines();
            }
            if tokio::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("{what} did not finish within {WAIT:?}; output:\n{}", self.lines().join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sample_services_work_together_through_a_node_loss() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_ready(WAIT).await;
    // Consumers go on without a member only once the cluster has recorded
    // that every member speaks their protocol (before that, a member that
    // is down might be an older version).
    cluster.wait_protocol(5, WAIT).await;
    let leader = cluster.leader(WAIT).await;
    // The analytics service connects first to a follower, which dies.
    let doomed = cluster.nodes.iter().map(|n| n.id).find(|id| *id != leader).expect("a follower");
    let mut ordered = vec![cluster.node(doomed).url.clone()];
    ordered.extend(cluster.urls().into_iter().filter(|u| *u != cluster.node(doomed).url));
    let urls = ordered.join(",");
    let survivors: Vec<String> = ordered[1..].to_vec();

    // 12 checkouts: 12 registrations, 12 orders, 8 payments and 4 failed.
    let analytics = Running::start(Command::new(example("analytics_service")).args([&urls, "36"]));
    let emails: Vec<Running> = ["email-1", "email-2"]
        .iter()
        .map(|name| {
            Running::start(Command::new("python3").args([
                concat!(env!("CARGO_MANIFEST_DIR"), "/examples/email_service.py"),
                "--url",
                &urls,
                "--name",
                name,
                "--work-ms",
                "30",
                // A message whose fetch answer was lost with the node comes
                // back when its lease ends: stay longer than that.
                "--ack-wait-ms",
                "2000",
                "--idle-exit",
                "5",
            ]))
        })
        .collect();
    let first = Running::start(Command::new(example("event_broadcaster")).args([&urls, "6"]));
    let published = first.finish("event_broadcaster").await;
    assert_eq!(published.len(), 18, "{published:?}");
    wait_for(WAIT, "analytics to count half the events", || {
        let counted = analytics.lines().iter().filter(|l| l.contains(" at offset ")).count();
        async move { counted >= 9 }
    })
    .await;
    cluster.node_mut(doomed).kill();
    // Checkouts 1-6 again (stored once: same ids) and 7-12.
    let second = Running::start(Command::new(example("event_broadcaster")).args([&survivors.join(","), "12"]));
    let published = second.finish("event_broadcaster").await;
    assert_eq!(published.iter().filter(|l| l.contains("already stored")).count(), 18, "{published:?}");

    let tallies = analytics.finish("analytics_service").await;
    let last = tallies.iter().rev().find(|l| l.contains(" at offset ")).expect("a tally line");
    assert!(last.ends_with("12 registrations, 12 orders, 8 payments (4 failed), revenue 368"), "final tally: {last}");

    // Between them the two email copies sent each email once.
    let mut sent = Vec::new();
    let mut per_copy = Vec::new();
    for copy in emails {
        let lines = copy.finish("email_service.py").await;
        let mine: Vec<String> = lines.iter().filter(|l| l.contains(": sent ")).cloned().collect();
        per_copy.push(mine.len());
        sent.extend(mine.into_iter().map(|l| l.split(": sent ").nth(1).unwrap_or_default().to_owned()));
    }
    sent.sort();
    let expected_sends = 12 + 12 + 8;
    let mut unique = sent.clone();
    unique.dedup();
    assert_eq!((sent.len(), unique.len()), (expected_sends, expected_sends), "sends: {sent:?}");
    assert!(sent.contains(&"welcome email to u-7@example.com".to_owned()), "{sent:?}");
    assert!(per_copy.iter().all(|n| *n > 0), "both copies did work: {per_copy:?}");

    let saga = Running::start(Command::new(example("saga")).args([&survivors.join(","), "4"]));
    let steps = saga.finish("saga").await;
    assert_eq!(steps.last().map(String::as_str), Some("saga: all 4 orders finished"), "{steps:?}");
    assert_eq!(steps.iter().filter(|l| l.ends_with("ended with payment.completed")).count(), 3, "{steps:?}");
    assert_eq!(steps.iter().filter(|l| l.ends_with("ended with inventory.reservation_failed")).count(), 1);

    let replay = Running::start(Command::new(example("replay_debug")).arg(&survivors[0]));
    let report = replay.finish("replay_debug").await;
    assert_eq!(report.iter().filter(|l| l.starts_with("failed payment at offset")).count(), 4, "{report:?}");
    assert!(report
        .iter()
        .any(|l| l.contains("\"p-3\" for order \"o-3\" (\"card declined\"), correlation \"checkout-3\"")));
}
