//! Processes the stack runs: started detached under a small supervisor that records the
//! service's pid and, when it ends, its exit status (so a clean stop is read from the
//! status, not from the log); signalled and awaited by pid, guarded against reused pids.

use anyhow::{Context, Result, bail};
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// `xtask supervise`: runs the program after `--`, writes its pid to `--pid-file` once it
/// runs and its exit status to `--exit-file` once it ends ("exit N" or "signal N").
#[derive(clap::Args)]
pub struct Supervise {
    /// Where the program's pid goes.
    #[arg(long)]
    pid_file: PathBuf,
    /// Where its exit status goes.
    #[arg(long)]
    exit_file: PathBuf,
    /// The program and its arguments.
    #[arg(last = true, required = true)]
    program: Vec<String>,
}

impl Supervise {
    /// Runs the program to its end (its environment and output are the supervisor's).
    pub fn run(self) -> Result<()> {
        let (program, args) = self
            .program
            .split_first()
            .context("supervise: no program")?;
        let _ = fs::remove_file(&self.exit_file);
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {program}"))?;
        write_atomically(&self.pid_file, &format!("{}\n", child.id()))?;
        let status = child.wait().context("wait")?;
        let recorded = match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit {code}\n"),
            (None, Some(signal)) => format!("signal {signal}\n"),
            (None, None) => "unknown\n".to_owned(),
        };
        write_atomically(&self.exit_file, &recorded)
    }
}

fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// How a supervised process ended, as its supervisor recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this code.
    Exit(i32),
    /// A signal ended it.
    Signal(i32),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Exit(code) => write!(f, "exited with status {code}"),
            Ended::Signal(signal) => write!(f, "ended by signal {signal}"),
        }
    }
}

/// A process `./dev` keeps a pid file for: `.dev/pids/<name>.pid` and `<name>.exit`.
pub struct Tracked {
    /// Its name (also the pattern its command line must contain).
    pub name: String,
    pid_file: PathBuf,
    exit_file: PathBuf,
}

impl Tracked {
    /// The tracked process `name` under `pids`.
    pub fn new(pids: &Path, name: &str) -> Self {
        Self {
            name: name.to_owned(),
            pid_file: pids.join(format!("{name}.pid")),
            exit_file: pids.join(format!("{name}.exit")),
        }
    }

    /// The recorded pid, if any.
    pub fn pid(&self) -> Option<u32> {
        read_pid(&self.pid_file)
    }

    /// Its pid when it is running.
    pub fn running(&self) -> Option<u32> {
        self.pid().filter(|&pid| alive(pid, &self.name))
    }

    /// How it ended, once its supervisor recorded that.
    pub fn ended(&self) -> Option<Ended> {
        let text = fs::read_to_string(&self.exit_file).ok()?;
        let (kind, number) = text.trim().split_once(' ')?;
        let number = number.parse().ok()?;
        match kind {
            "exit" => Some(Ended::Exit(number)),
            "signal" => Some(Ended::Signal(number)),
            _ => None,
        }
    }

    /// Starts `program` detached (own session, no terminal, output appended to `log`)
    /// under `supervisor` (this binary), with `env` added; returns its pid.
    pub fn start(
        &self,
        supervisor: &Path,
        log: &Path,
        program: &Path,
        env: &[(String, String)],
        cwd: &Path,
    ) -> Result<u32> {
        let old = self.pid();
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let err = out.try_clone()?;
        let _ = fs::remove_file(&self.exit_file);
        // setsid(1) detaches it from this terminal's session: ^C or a closed terminal
        // leaves the stack running, as `./dev up` promises.
        Command::new("setsid")
            .arg(supervisor)
            .arg("supervise")
            .arg("--pid-file")
            .arg(&self.pid_file)
            .arg("--exit-file")
            .arg(&self.exit_file)
            .arg("--")
            .arg(program)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.pid() {
                Some(pid) if Some(pid) != old => return Ok(pid),
                _ if Instant::now() > deadline => {
                    bail!("{} did not start (see {})", self.name, log.display())
                }
                _ => sleep(Duration::from_millis(20)),
            }
        }
    }

    /// SIGTERM when it runs, then `grace` for it to end, then SIGKILL.
    pub fn stop(&self, grace: Duration) {
        if let Some(pid) = self.running() {
            say!("stopping {} (pid {pid})", self.name);
            signal(pid, "TERM");
            self.await_stop(pid, grace);
        }
        let _ = fs::remove_file(&self.pid_file);
    }

    /// Waits `grace` for `pid` to end, then kills it (its process group when it leads one).
    pub fn await_stop(&self, pid: u32, grace: Duration) {
        if wait_for(grace, || !alive(pid, &self.name)) {
            return;
        }
        say!(
            "{} (pid {pid}) did not stop within {}s, killing it",
            self.name,
            grace.as_secs()
        );
        if !signal_group(pid, "KILL") {
            signal(pid, "KILL");
        }
        wait_for(Duration::from_secs(5), || !alive(pid, &self.name));
    }
}

/// The number in a pid file.
pub fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// `pid` runs and its command line contains `pattern` (a stale pid file whose number was
/// reused by another program does not count).
pub fn alive(pid: u32, pattern: &str) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    // A zombie has an empty command line: it has ended.
    !cmdline.is_empty()
        && String::from_utf8_lossy(&cmdline)
            .replace('\0', " ")
            .contains(pattern)
}

/// Sends SIG`name` to `pid`; false when that failed (it had ended).
pub fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn signal_group(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg("--")
        .arg(format!("-{pid}"))
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Polls `ready` until it holds (true) or `within` passed (false).
pub fn wait_for(within: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(200));
    }
}

/// The status code of `GET <path>` on 127.0.0.1:`port`, or None when nothing answered
/// within two seconds.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let timeout = Duration::from_secs(2);
    let mut stream =
        TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Runs `command` to its end; an error names it when it could not start or failed.
pub fn check(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {:?}", command.get_program()))?;
    if !status.success() {
        bail!("{} failed ({status})", describe(command));
    }
    Ok(())
}

/// Runs `command` and returns its standard output, trimmed.
pub fn output(command: &mut Command) -> Result<String> {
    let out = command
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {:?}", command.get_program()))?;
    if !out.status.success() {
        bail!("{} failed ({})", describe(command), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn describe(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(
        command
            .get_args()
            .take(3)
            .map(|a| a.to_string_lossy().into_owned()),
    );
    words.join(" ")
}
