//! One `synap` process started from a binary with fixed arguments, logging
//! to a file, that can be killed, paused, stopped gracefully and started
//! again with the same arguments. The chaos tool's local target and the
//! integration tests both run nodes through it.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on right now (on 127.0.0.1).
pub fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A restartable process.
#[derive(Debug)]
pub struct Process {
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

fn signal(pid: u32, name: &str) -> io::Result<()> {
    let status = Command::new("kill").args([name, &pid.to_string()]).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("kill {name} {pid} failed: {status}")))
    }
}

impl Process {
    /// A process of `binary` with `args`, appending its stdout and stderr
    /// to `log`. Not started yet.
    pub fn new(binary: &Path, args: Vec<String>, log: PathBuf) -> Self {
        Self { binary: binary.to_owned(), args, env: Vec::new(), log, child: None, paused: false }
    }

    /// Sets an environment variable for every start.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Its arguments.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Adds arguments for the next start.
    pub fn add_args(&mut self, more: &[&str]) {
        self.args.extend(more.iter().map(|a| a.to_string()));
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Whether it was started and not killed or stopped since.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether it is stopped with SIGSTOP.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// How it ended, if it exited on its own (it is then no longer
    /// running); `None` while it runs or if it was never started.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        self.paused = false;
        Some(status)
    }

    /// Its pid while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts it (again).
    pub fn start(&mut self) -> io::Result<()> {
        if self.child.is_some() {
            return Err(io::Error::other(format!("{} is already running", self.binary.display())));
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(&self.binary)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("start {}: {e}", self.binary.display())))?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    /// `kill -9`, and reap. Returns the pid it had, if it was running.
    pub fn kill(&mut self) -> Option<u32> {
        let mut child = self.child.take()?;
        let pid = child.id();
        let _ = child.kill();
        let _ = child.wait();
        self.paused = false;
        Some(pid)
    }

    /// SIGTERM (a graceful stop), and reap; `kill -9` if it has not exited
    /// after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else { return };
        if self.paused {
            let _ = signal(child.id(), "-CONT");
            self.paused = false;
        }
        let _ = signal(child.id(), "-TERM");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Freezes it (SIGSTOP).
    pub fn pause(&mut self) -> io::Result<()> {
        let pid = self.pid().ok_or_else(|| io::Error::other("not running"))?;
        signal(pid, "-STOP")?;
        self.paused = true;
        Ok(())
    }

    /// Thaws it (SIGCONT).
    pub fn resume(&mut self) -> io::Result<()> {
        let pid = self.pid().ok_or_else(|| io::Error::other("not running"))?;
        signal(pid, "-CONT")?;
        self.paused = false;
        Ok(())
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.paused {
            if let Some(pid) = self.pid() {
                let _ = signal(pid, "-CONT");
            }
        }
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_starts_logs_stops_and_starts_again() {
        let dir = tempfile::TempDir::new().unwrap();
        let log = dir.path().join("sleep.log");
        let mut process = Process::new(Path::new("sh"), vec!["-c".into(), "echo started; exec sleep 30".into()], log);
        let wait_log = |process: &Process, expected: &str| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while process.log_tail(5) != expected {
                assert!(Instant::now() < deadline, "log {expected:?}; log: {:?}", process.log_tail(5));
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        process.start().unwrap();
        assert!(process.is_running());
        assert!(process.start().is_err(), "one child at a time");
        // Paused (and then stopped) before its echo, the shell would never
        // log: wait for it first.
        wait_log(&process, "started");
        process.pause().unwrap();
        assert!(process.is_paused());
        process.stop(Duration::from_secs(5));
        assert!(!process.is_running() && !process.is_paused());
        process.start().unwrap();
        wait_log(&process, "started\nstarted");
        let pid = process.pid();
        assert_eq!(process.kill(), pid);
        assert_eq!(process.kill(), None);
    }
}
