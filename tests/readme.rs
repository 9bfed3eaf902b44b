//! Runs the README's quick start the way a new user would: the one-node
//! section and the three-node section, command by command, on free ports
//! and in temporary directories instead of the fixed ones the README shows.
//! A history read that a new user would simply run again (another node
//! shows a write a moment later) is retried until it prints something.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The ```sh blocks of the README section under `heading`.
fn blocks(readme: &str, heading: &str) -> Vec<String> {
    let section = readme.split("\n## ").find(|s| s.starts_with(heading)).unwrap_or_else(|| panic!("no '{heading}'"));
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "```sh" {
            let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            blocks.push(body.join("\n"));
        }
    }
    blocks
}

/// The README's addresses and paths, mapped to this run's.
struct Local {
    ports: BTreeMap<u16, u16>,
    dir: tempfile::TempDir,
}

impl Local {
    fn new() -> Self {
        let ports = (15500..=15504).map(|p| (p, free_port())).collect();
        Self { ports, dir: tempfile::TempDir::new().expect("temp dir") }
    }

    fn url(&self, readme_port: u16) -> String {
        format!("http://127.0.0.1:{}", self.ports[&readme_port])
    }

    fn rewrite(&self, line: &str) -> String {
        let bin = env!("CARGO_BIN_EXE_synap");
        // `target/release/synap` first: a release build's own path ends in it,
        // so replacing it after `cargo run` would rewrite that path again.
        let mut line = line.replace("target/release/synap", bin).replace("cargo run --release --", bin);
        if line.trim() == "cargo build --release" {
            line = "true".into();
        }
        for (from, to) in &self.ports {
            line = line.replace(&format!(":{from}"), &format!(":{to}"));
        }
        line.replace("/tmp/synap", &self.dir.path().join("synap").display().to_string())
    }
}

/// Runs the lines of `block` in a shell started in `cwd`, with `prelude`
/// (the variables set so far) before each: `serve` lines in the
/// background, the others to completion. Returns what they printed.
fn run_block(local: &Local, block: &str, cwd: &Path, prelude: &mut String, servers: &mut Vec<Child>) -> String {
    let mut printed = String::new();
    for line in block.lines().map(|l| local.rewrite(l)) {
        let command = line.split(" #").next().unwrap_or("").trim().to_owned();
        if command.is_empty() || command.starts_with('#') {
            continue;
        }
        if command.chars().next().is_some_and(|c| c.is_ascii_uppercase()) && command.contains('=') {
            prelude.push_str(&command);
            prelude.push('\n');
            continue;
        }
        if command.contains(" serve") {
            let command = command.trim_end_matches('&').trim();
            let server = Command::new("bash")
                .args(["-c", &format!("{prelude}exec {command}")])
                .current_dir(cwd)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start a server line");
            servers.push(server);
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let output = Command::new("bash")
                .args(["-c", &format!("{prelude}{command}")])
                .current_dir(cwd)
                .output()
                .expect("run a README line");
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            let read = command.contains(" history ");
            if output.status.success() && !(read && stdout.trim().is_empty()) {
                // Pretty-printed or not, compare the same way.
                printed.push_str(&stdout.replace(": ", ":"));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "README line `{command}` kept failing: {}\n{stdout}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    printed
}

fn wait_ready(url: &str) {
    let deadline = Instant::now() + READY;
    let health = || Command::new(env!("CARGO_BIN_EXE_synap")).args(["health", url]).output();
    while !health().is_ok_and(|o| o.status.success()) {
        assert!(Instant::now() < deadline, "{url} not ready within {READY:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for server in &mut self.0 {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

#[test]
fn the_one_node_quick_start_works_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let sections = blocks(&readme, "Start it");
    assert_eq!(sections.len(), 2, "a block that starts the node, one that uses it");
    let local = Local::new();
    let mut servers = Servers(Vec::new());
    // `serve` with no flags listens on 15500 and keeps its data in the
    // working directory, and the client commands talk to 15500: give both
    // this run's port, and a fresh working directory.
    let mut prelude = format!("export SYNAP_URL={}\n", local.url(15500));
    let start = sections[0].replace("serve", "serve --listen 127.0.0.1:15500");
    run_block(&local, &start, local.dir.path(), &mut prelude, &mut servers.0);
    wait_ready(&local.url(15500));
    let printed = run_block(&local, &sections[1], local.dir.path(), &mut prelude, &mut servers.0);
    assert!(local.dir.path().join("synap-data").is_dir(), "the data went to ./synap-data");
    assert!(printed.contains(r#""offset":0"#), "the publish answered offset 0:\n{printed}");
    assert_eq!(printed.matches(r#""userId":"u1""#).count(), 2, "history and curl show the event:\n{printed}");
    assert!(printed.contains(r#""correlationId":"c-1""#), "with its metadata:\n{printed}");
}

#[test]
fn the_three_node_section_works_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let sections = blocks(&readme, "A three-node cluster on one machine");
    assert_eq!(sections.len(), 3, "start, use, grow and shrink");
    let local = Local::new();
    let mut servers = Servers(Vec::new());
    let mut prelude = String::new();
    run_block(&local, &sections[0], local.dir.path(), &mut prelude, &mut servers.0);
    for port in [15501, 15502, 15503] {
        wait_ready(&local.url(port));
    }
    let printed = run_block(&local, &sections[1], local.dir.path(), &mut prelude, &mut servers.0);
    assert!(printed.contains(r#""leader":"#), "cluster status names a leader:\n{printed}");
    assert!(printed.contains(r#""orderId":"o-1""#), "node 3 shows the event published through node 2:\n{printed}");
    assert!(printed.contains(r#""next_offset":1"#), "stats count it:\n{printed}");
    let printed = run_block(&local, &sections[2], local.dir.path(), &mut prelude, &mut servers.0);
    // Removing a node that is not a member answers 404, so this also shows
    // that node 4 had joined.
    assert!(printed.contains(r#""removed":4"#), "node 4 joined and was removed:\n{printed}");
}
