//! The daemon under measurement: the release `qunbridge` binary run as its own process on a
//! generated config in a fresh directory, with what `/proc` tells about it (resident memory,
//! CPU time).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use qunbridge_tests::free_port;

/// How long a daemon may take to answer `/readyz`.
const READY_WAIT: Duration = Duration::from_secs(60);
/// How long a stopping daemon may take before it is killed.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// Where daemon logs are kept (`--logs`); by default in each daemon's temporary directory.
pub static LOG_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Config appended to every daemon's (`--stats off` turns group health off, to measure its
/// cost).
pub static EXTRA_CONFIG: OnceLock<String> = OnceLock::new();

/// Daemons started so far, to number kept logs.
static STARTED: AtomicUsize = AtomicUsize::new(0);

/// A running `qunbridge run`; killed when dropped.
pub struct Daemon {
    /// The process.
    child: Child,
    /// Its admin endpoint.
    pub admin: SocketAddr,
    /// Its config, state directory and log.
    dir: tempfile::TempDir,
    /// Its stderr.
    log: PathBuf,
}

impl Daemon {
    /// Writes `config` (with `state_dir` and `[admin]` added) into a fresh directory, starts
    /// `binary` on it and waits until `/readyz` answers 200.
    ///
    /// # Errors
    /// When the process cannot start or is not ready in time (with the end of its log).
    pub async fn start(binary: &Path, config: &str, label: &str) -> Result<Daemon, String> {
        let dir = tempfile::Builder::new()
            .prefix("qunbridge-bench-")
            .tempdir()
            .map_err(|e| format!("cannot make a temporary directory: {e}"))?;
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let path = dir.path().join("qunbridge.toml");
        let text = format!(
            "state_dir = {:?}\n{config}\n{}\n[admin]\nlisten = \"{admin}\"\n",
            dir.path().join("state"),
            EXTRA_CONFIG.get().map_or("", String::as_str)
        );
        std::fs::write(&path, text).map_err(|e| format!("cannot write {path:?}: {e}"))?;
        let number = STARTED.fetch_add(1, Ordering::Relaxed) + 1;
        let log = match LOG_DIR.get() {
            Some(logs) => {
                std::fs::create_dir_all(logs)
                    .map_err(|e| format!("cannot create {logs:?}: {e}"))?;
                logs.join(format!("{number:02}-{label}.log"))
            }
            None => dir.path().join("daemon.log"),
        };
        let stderr =
            std::fs::File::create(&log).map_err(|e| format!("cannot create {log:?}: {e}"))?;
        let child = Command::new(binary)
            .arg("run")
            .arg("-c")
            .arg(&path)
            .env(
                "QUNBRIDGE_LOG",
                std::env::var("QUNBRIDGE_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {binary:?}: {e}"))?;
        let mut daemon = Daemon {
            child,
            admin,
            dir,
            log,
        };
        daemon.wait_ready().await?;
        eprintln!("  daemon {label} ready, pid {}", daemon.pid());
        Ok(daemon)
    }

    /// Polls `/readyz` until it answers 200.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let url = format!("http://{}/readyz", self.admin);
        let client = admin_client()?;
        let deadline = Instant::now() + READY_WAIT;
        loop {
            if let Ok(response) = client.get(&url).send().await {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("the daemon exited ({status}): {}", self.log_tail()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the daemon was not ready within {READY_WAIT:?}: {}",
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The daemon's Prometheus text (`/metrics` on the admin endpoint).
    ///
    /// # Errors
    /// When the endpoint does not answer.
    pub async fn metrics(&self) -> Result<String, String> {
        let url = format!("http://{}/metrics", self.admin);
        let response = admin_client()?
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("metrics unavailable: {e}"))?;
        response
            .text()
            .await
            .map_err(|e| format!("metrics unavailable: {e}"))
    }

    /// What the daemon counted as dropped so far (`qunbridge_messages_dropped_total` by
    /// reason, non-zero ones), as `reason=count, …`; empty when none.
    pub async fn drops(&self) -> String {
        match self.metrics().await {
            Ok(text) => drops_in(&text),
            Err(error) => error,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now, in KiB (`VmRSS`).
    ///
    /// # Errors
    /// When `/proc` cannot be read.
    pub fn rss_kib(&self) -> Result<u64, String> {
        status_field(self.pid(), "VmRSS:")
    }

    /// Peak resident memory so far, in KiB (`VmHWM`).
    ///
    /// # Errors
    /// When `/proc` cannot be read.
    pub fn peak_rss_kib(&self) -> Result<u64, String> {
        status_field(self.pid(), "VmHWM:")
    }

    /// User + system CPU time so far, in clock ticks.
    ///
    /// # Errors
    /// When `/proc` cannot be read.
    pub fn cpu_ticks(&self) -> Result<u64, String> {
        cpu_ticks(self.pid())
    }

    /// Context switches so far, voluntary + involuntary, summed over the daemon's threads.
    ///
    /// # Errors
    /// When `/proc` cannot be read.
    pub fn context_switches(&self) -> Result<u64, String> {
        context_switches(self.pid())
    }

    /// Stops the daemon as systemd would (SIGTERM) and waits for it; returns how long it took.
    ///
    /// # Errors
    /// When it did not stop in time (it is killed then) or exited with an error.
    pub async fn stop(mut self) -> Result<Duration, String> {
        let started = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(started.elapsed()),
                Ok(Some(status)) => {
                    return Err(format!(
                        "the daemon exited with {status}: {}",
                        self.log_tail()
                    ))
                }
                Ok(None) if started.elapsed() < STOP_WAIT => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => {
                    let _ = self.child.kill();
                    return Err(format!("the daemon did not stop within {STOP_WAIT:?}"));
                }
            }
        }
    }

    /// The last lines of the daemon's log, for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(10)..].join("\n");
        format!(
            "log {:?} (kept in {:?}):\n{tail}",
            self.log,
            self.dir.path()
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An HTTP client for the admin endpoint, which answers at once or not at all.
fn admin_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// What `qunbridge_messages_dropped_total` counted by reason in a Prometheus text, non-zero
/// ones, as `reason=count, …`.
fn drops_in(text: &str) -> String {
    text.lines()
        .filter_map(|line| line.strip_prefix("qunbridge_messages_dropped_total{"))
        .filter_map(|rest| {
            let (labels, value) = rest.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let reason = labels.split("reason=\"").nth(1)?.split('"').next()?;
            (value > 0.0).then(|| format!("{reason}={value}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The sum of every series of metric `name` in a Prometheus text (with or without labels);
/// `None` when there is no such series.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // `name 3` or `name{labels} 3`, not `name_bucket…`.
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let Some(value) = rest
            .rsplit(' ')
            .next()
            .and_then(|v| v.trim().parse::<f64>().ok())
        else {
            continue;
        };
        *found.get_or_insert(0.0) += value;
    }
    found
}

/// User + system CPU time of process `pid` so far, in clock ticks (`/proc/<pid>/stat`).
///
/// # Errors
/// When `/proc` cannot be read.
pub fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    // Fields after the command name (which may hold spaces) start at `state` (field 3);
    // utime and stime are fields 14 and 15.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| format!("unexpected {path}: {stat}"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |index: usize| -> Result<u64, String> {
        fields
            .get(index)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("unexpected {path}: {stat}"))
    };
    Ok(field(11)? + field(12)?)
}

/// Context switches of process `pid` so far: `voluntary_ctxt_switches` +
/// `nonvoluntary_ctxt_switches` of every live thread (`/proc/<pid>/task/*/status`; a
/// thread's own `status` counts only that thread, and a thread that has exited is no longer
/// counted).
///
/// # Errors
/// When `/proc` cannot be read.
pub fn context_switches(pid: u32) -> Result<u64, String> {
    let dir = format!("/proc/{pid}/task");
    let tasks = std::fs::read_dir(&dir).map_err(|e| format!("cannot read {dir}: {e}"))?;
    let mut total = 0;
    for task in tasks.flatten() {
        // A thread may end between the listing and the read.
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        total += status
            .lines()
            .filter_map(|line| {
                line.strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            })
            .filter_map(|v| v.trim().parse::<u64>().ok())
            .sum::<u64>();
    }
    Ok(total)
}

/// A `kB` field of `/proc/<pid>/status`.
pub fn status_field(pid: u32, name: &str) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no {name} in {path}"))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 when that cannot be asked).
pub fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// `perf record` (CPU clock samples with call chains) attached to a daemon for one phase,
/// with `--perf DIR`.
pub struct Perf {
    /// The recorder.
    child: Child,
}

impl Perf {
    /// Starts recording `pid` into `DIR/<name>.perf.data`; `None` without `--perf` or when
    /// perf cannot start (said on stderr).
    pub async fn start(dir: Option<&Path>, pid: u32, name: &str) -> Option<Perf> {
        let dir = dir?;
        if let Err(error) = std::fs::create_dir_all(dir) {
            eprintln!("cannot create {dir:?}: {error}");
            return None;
        }
        let out = dir.join(format!("{name}.perf.data"));
        let spawned = Command::new("perf")
            .args([
                "record",
                "-e",
                "cpu-clock",
                "-F",
                "999",
                "--call-graph",
                "dwarf,32768",
                "-p",
            ])
            .arg(pid.to_string())
            .arg("-o")
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match spawned {
            Ok(child) => {
                // perf needs a moment to attach.
                tokio::time::sleep(Duration::from_millis(500)).await;
                eprintln!("recording {out:?}");
                Some(Perf { child })
            }
            Err(error) => {
                eprintln!("cannot start perf: {error}");
                None
            }
        }
    }

    /// Stops recording (SIGINT, as Ctrl-C) and waits for perf to write its file.
    pub async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Ok(None) = self.child.try_wait() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_add_every_series_of_the_name_only() {
        let text = "# TYPE qunbridge_reconnects_total counter\n\
                    qunbridge_reconnects_total{account=\"a\"} 2\n\
                    qunbridge_reconnects_total{account=\"b\"} 3\n\
                    qunbridge_reconnects_totally 100\n\
                    qunbridge_store_commits_total 7\n\
                    qunbridge_store_commit_seconds_bucket{le=\"0.1\"} 9\n\
                    qunbridge_messages_dropped_total{reason=\"duplicate\"} 4\n\
                    qunbridge_messages_dropped_total{reason=\"expired\"} 0\n";
        assert_eq!(metric_sum(text, "qunbridge_reconnects_total"), Some(5.0));
        assert_eq!(metric_sum(text, "qunbridge_store_commits_total"), Some(7.0));
        assert_eq!(metric_sum(text, "qunbridge_ingress_rejected_total"), None);
        assert_eq!(drops_in(text), "duplicate=4");
    }
}
