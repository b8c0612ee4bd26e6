//! CPU time and memory of the processes under test, from /proc: a service by its pid, a
//! dependency (RabbitMQ's `beam.smp`, PostgreSQL's backends) as every process with its
//! command name.

use std::fs;

/// A process, or a group of processes, to account for.
#[derive(Debug, Clone)]
pub struct Watched {
    /// How the report names it.
    pub name: String,
    /// Which processes.
    pub which: Which,
}

/// How the processes of a [`Watched`] are found.
#[derive(Debug, Clone)]
pub enum Which {
    /// One pid.
    Pid(u32),
    /// Every process whose command name (`/proc/PID/comm`) is this.
    Comm(String),
}

impl Watched {
    /// Parses `name=pid` or `name=comm:<command name>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, which) = text
            .split_once('=')
            .ok_or_else(|| format!("'{text}' is not NAME=PID or NAME=comm:COMMAND"))?;
        let which = match which.strip_prefix("comm:") {
            Some(comm) => Which::Comm(comm.to_owned()),
            None => Which::Pid(
                which
                    .parse()
                    .map_err(|_| format!("'{which}' is not a pid"))?,
            ),
        };
        Ok(Self {
            name: name.to_owned(),
            which,
        })
    }

    fn pids(&self) -> Vec<u32> {
        match &self.which {
            Which::Pid(pid) => vec![*pid],
            Which::Comm(comm) => fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| {
                    fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
                })
                .collect(),
        }
    }

    /// CPU seconds (user + system) used so far by its processes (summed), and the largest
    /// peak resident set size among them (bytes: summing would count a shared buffer pool
    /// once per PostgreSQL backend).
    pub fn sample(&self, ticks_per_second: f64) -> Sample {
        let mut sample = Sample::default();
        for pid in self.pids() {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The command name may hold spaces and parentheses: fields count from the last ')'.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
            let ticks: u64 = [11, 12]
                .iter()
                .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
                .sum();
            sample.cpu_seconds += ticks as f64 / ticks_per_second;
            let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let peak = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024);
            sample.peak_rss_bytes = sample.peak_rss_bytes.max(peak);
        }
        sample
    }
}

/// CPU and memory of a watched group at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// CPU seconds so far.
    pub cpu_seconds: f64,
    /// The largest peak resident set size of its processes so far, bytes.
    pub peak_rss_bytes: u64,
}

/// Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`; 100 on Linux).
pub fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(100.0)
}
