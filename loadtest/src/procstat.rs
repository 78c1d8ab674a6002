//! The server's CPU time and memory, from `/proc/<pid>/stat` and `/proc/<pid>/status` (Linux),
//! and starting a `prism` server process for a run.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Reading /proc or starting the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The process is gone or /proc is not readable.
    #[error("cannot read /proc/{pid}: {source}")]
    Read {
        /// Process id.
        pid: u32,
        /// Why.
        source: std::io::Error,
    },
    /// /proc had an unexpected format.
    #[error("unexpected format of /proc/{pid}/{file}")]
    Format {
        /// Process id.
        pid: u32,
        /// stat or status.
        file: &'static str,
    },
    /// The server binary could not be started.
    #[error("cannot start server {path}: {source}")]
    Spawn {
        /// The binary.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The started server exited before it listened.
    #[error("server {path} exited ({status}) before listening on {addr}")]
    Exited {
        /// The binary.
        path: String,
        /// Exit status.
        status: String,
        /// Where it should have listened.
        addr: String,
    },
    /// The started server did not listen in time.
    #[error("server {path} did not listen on {addr} within 20 s")]
    NotListening {
        /// The binary.
        path: String,
        /// Where it should have listened.
        addr: String,
    },
}

/// CPU time and resident memory of a process at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// utime + stime, seconds.
    pub cpu_secs: f64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
}

/// Clock ticks per second of /proc/<pid>/stat times (USER_HZ; 100 on every Linux we run on).
const USER_HZ: f64 = 100.0;

/// Reads a process's CPU time and RSS.
pub fn usage(pid: u32) -> Result<Usage, ProcError> {
    let read = |file: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .map_err(|source| ProcError::Read { pid, source })
    };
    let stat = read("stat")?;
    let (utime, stime) = parse_stat(&stat).ok_or(ProcError::Format { pid, file: "stat" })?;
    let status = read("status")?;
    let rss_kb = parse_rss_kb(&status).ok_or(ProcError::Format {
        pid,
        file: "status",
    })?;
    Ok(Usage {
        cpu_secs: (utime + stime) as f64 / USER_HZ,
        rss_bytes: rss_kb * 1024,
    })
}

/// utime and stime (clock ticks) from the text of /proc/<pid>/stat.
fn parse_stat(stat: &str) -> Option<(u64, u64)> {
    // The command name (field 2) may hold spaces and parentheses: fields resume after the
    // last ')'. utime and stime are fields 14 and 15, i.e. 12th and 13th after it.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace().skip(11);
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

/// VmRSS in kB from the text of /proc/<pid>/status.
fn parse_rss_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Busy and total clock ticks of the whole machine (all cores) from /proc/stat.
pub fn system_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_system_ticks(&stat)
}

fn parse_system_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Number of CPUs the machine has online.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One sample of the server over the run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Seconds since the run started.
    pub t_secs: f64,
    /// CPU used since the previous sample, % of one core.
    pub cpu_pct: f64,
    /// Resident memory, MiB.
    pub rss_mib: f64,
}

/// Samples a process once a second (or whenever asked).
#[derive(Debug)]
pub struct Sampler {
    pid: u32,
    started: Instant,
    last: Option<(Instant, Usage)>,
    /// Samples so far.
    pub samples: Vec<Sample>,
    /// First reading.
    pub first: Option<Usage>,
    /// Peak RSS, bytes.
    pub peak_rss: u64,
    /// Last error (the process may have exited).
    pub error: Option<String>,
}

impl Sampler {
    /// A sampler of `pid`; the run clock starts at `started`.
    pub fn new(pid: u32, started: Instant) -> Self {
        Self {
            pid,
            started,
            last: None,
            samples: vec![],
            first: None,
            peak_rss: 0,
            error: None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Takes a sample now; returns the reading.
    pub fn sample(&mut self) -> Option<Usage> {
        let now = Instant::now();
        let u = match usage(self.pid) {
            Ok(u) => u,
            Err(e) => {
                self.error = Some(e.to_string());
                return None;
            }
        };
        self.first.get_or_insert(u);
        self.peak_rss = self.peak_rss.max(u.rss_bytes);
        if let Some((at, prev)) = self.last {
            let dt = (now - at).as_secs_f64();
            if dt > 0.0 {
                self.samples.push(Sample {
                    t_secs: (now - self.started).as_secs_f64(),
                    cpu_pct: (u.cpu_secs - prev.cpu_secs) / dt * 100.0,
                    rss_mib: u.rss_bytes as f64 / 1_048_576.0,
                });
            }
        }
        self.last = Some((now, u));
        Some(u)
    }

    /// CPU % of one core in the last sample.
    pub fn last_cpu_pct(&self) -> Option<f64> {
        self.samples.last().map(|s| s.cpu_pct)
    }

    /// RSS at the last reading, bytes.
    pub fn last_rss(&self) -> Option<u64> {
        self.last.map(|(_, u)| u.rss_bytes)
    }
}

/// A `prism` server started for the run; killed when dropped.
#[derive(Debug)]
pub struct SpawnedServer {
    child: Child,
}

impl SpawnedServer {
    /// Starts `path` listening on `port` (HTTP/WebSocket) and `udp_port..` (media), logging
    /// at warn to stderr, and waits until it accepts TCP connections.
    pub async fn start(
        path: &Path,
        port: u16,
        udp_port: Option<u16>,
        workers: Option<usize>,
        credentials: Option<(&str, &str)>,
    ) -> Result<Self, ProcError> {
        let shown = path.display().to_string();
        let mut command = Command::new(path);
        command
            .env("PRISM_PORT", port.to_string())
            .env("PRISM_LOG__LEVEL", "warn")
            .stdout(Stdio::null());
        if let Some(udp) = udp_port {
            command.env("PRISM_RTC__UDP_PORT", udp.to_string());
        }
        if let Some(w) = workers {
            command.env("PRISM_RTC__WORKERS", w.to_string());
        }
        if let Some((key, secret)) = credentials {
            command
                .env("PRISM_API_KEY", key)
                .env("PRISM_API_SECRET", secret);
        }
        let child = command.spawn().map_err(|source| ProcError::Spawn {
            path: shown.clone(),
            source,
        })?;
        let mut server = Self { child };
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(ProcError::Exited {
                    path: shown,
                    status: status.to_string(),
                    addr,
                });
            }
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                let _ = server.child.kill();
                return Err(ProcError::NotListening { path: shown, addr });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let stat = "1234 (pr is) m) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0 100 2000 300";
        assert_eq!(parse_stat(stat), Some((250, 50)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn parses_system_ticks() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(parse_system_ticks(stat), Some((150, 1000)));
        assert!(system_ticks().is_some());
    }

    #[test]
    fn parses_rss() {
        let status = "Name:\tprism\nVmPeak:\t  9000 kB\nVmRSS:\t  4321 kB\n";
        assert_eq!(parse_rss_kb(status), Some(4321));
    }

    #[test]
    fn reads_own_usage() {
        let u = usage(std::process::id()).unwrap();
        assert!(u.rss_bytes > 0);
        let mut s = Sampler::new(std::process::id(), Instant::now());
        s.sample();
        s.sample();
        assert_eq!(s.samples.len(), 1);
        assert!(usage(u32::MAX).is_err());
    }
}
