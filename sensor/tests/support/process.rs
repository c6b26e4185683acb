//! A child process started inside a network namespace (`ip netns exec NS PROGRAM …`), with its
//! stdout and stderr in one log file. `ip netns exec` execs the program in place (no fork), so
//! the child's pid is the program's own pid and signals reach it directly. Killed on drop.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct NsProcess {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    exit: Option<ExitStatus>,
}

impl NsProcess {
    /// Starts `program args…` in namespace `ns` with extra environment `env`, logging to `log`.
    pub fn spawn(
        name: &str,
        ns: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log: &Path,
    ) -> Result<Self, String> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(program).args(args);
        Self::start(name, cmd, env, log, &format!("in {ns}: {} {}", program.display(), args.join(" ")))
    }

    /// Starts `program args…` in the root namespace (no `ip netns exec`), otherwise like
    /// [`NsProcess::spawn`].
    pub fn spawn_host(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log: &Path,
    ) -> Result<Self, String> {
        let mut cmd = Command::new(program);
        cmd.args(args);
        Self::start(name, cmd, env, log, &format!("{} {}", program.display(), args.join(" ")))
    }

    /// Runs `cmd` with `env`, stdout and stderr into `log`; `what` names it in messages.
    fn start(name: &str, mut cmd: Command, env: &[(&str, &str)], log: &Path, what: &str) -> Result<Self, String> {
        let out = File::create(log).map_err(|e| format!("{name}: create {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| format!("{name}: clone log handle: {e}"))?;
        cmd.envs(env.iter().copied());
        cmd.stdin(Stdio::null()).stdout(Stdio::from(out)).stderr(Stdio::from(err));
        let child = cmd.spawn().map_err(|e| format!("{name}: spawn {what}: {e}"))?;
        eprintln!("[lab] started {name} (pid {}) {what}", child.id());
        Ok(Self { name: name.to_string(), child: Some(child), log: log.to_path_buf(), exit: None })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// `None` while running, the exit status once it has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            self.exit = Some(status);
        }
        self.exit
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_status().is_none()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the process if it still runs.
    pub fn signal(&mut self, signal: i32) -> Result<(), String> {
        if !self.is_running() {
            return Err(format!("{}: not running (exit {:?})", self.name, self.exit));
        }
        let pid = self.pid().ok_or_else(|| format!("{}: no child", self.name))?;
        // SAFETY: kill(2) on our own child's pid; the child has not been reaped (try_wait said
        // running), so the pid cannot have been reused.
        let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
        if rc == 0 {
            Ok(())
        } else {
            Err(format!("{}: kill({pid}, {signal}): {}", self.name, std::io::Error::last_os_error()))
        }
    }

    /// Waits up to `timeout` for the process to exit (polling every 50 ms).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take()
            && self.exit.is_none()
        {
            let _ = child.kill();
            if let Ok(status) = child.wait() {
                self.exit = Some(status);
            }
        }
    }

    /// The last `lines` lines of the log (at most the last 64 KiB of the file).
    pub fn log_tail(&self, lines: usize) -> String {
        tail_file(&self.log, lines)
    }

    /// The whole log (tests grep it; logs here are small).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A labelled block with the log tail, for failure reports.
    pub fn report(&mut self, lines: usize) -> String {
        let state = match self.try_status() {
            None if self.child.is_some() => "running".to_string(),
            None => "killed".to_string(),
            Some(s) => format!("exited: {s}"),
        };
        format!(
            "----- {} ({state}), last {lines} lines of {} -----\n{}\n----- end of {} -----",
            self.name,
            self.log.display(),
            self.log_tail(lines),
            self.name
        )
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn tail_file(path: &Path, lines: usize) -> String {
    const MAX: u64 = 64 * 1024;
    let Ok(mut f) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(MAX)));
    let mut buf = Vec::new();
    let _ = f.take(MAX).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
