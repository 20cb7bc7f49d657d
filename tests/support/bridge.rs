//! The real daemon binary as a child process, with its config and log in a tempdir.
//!
//! The child's environment is the test's minus every `PLEX_MQTT_BRIDGE_*` variable and `RUST_LOG` (so a
//! developer's shell cannot change a test), plus `NO_COLOR=1` (plain logs), plus what the test passes.
//! stdout and stderr both go to one log file, in the order written. If a test panics while a `Bridge` is
//! alive, its log is printed to stderr when the `Bridge` is dropped.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::config::ConfigText;
use super::wait;

/// The daemon binary Cargo built for this test run.
pub const BIN: &str = env!("CARGO_BIN_EXE_plex-mqtt-bridge");
/// The prefix of every variable the daemon reads.
pub const ENV_PREFIX: &str = "PLEX_MQTT_BRIDGE_";

/// A process's peak resident memory (`VmHWM` in `/proc/<pid>/status`), in KiB; panics when it cannot be read, so
/// a memory bound is never checked against a figure that was not measured.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {path}:\n{status}"))
}

/// A running daemon; killed on Drop.
pub struct Bridge {
    child: Child,
    dir: tempfile::TempDir,
    log_path: PathBuf,
    config_path: Option<PathBuf>,
    exit: Option<ExitStatus>,
}

/// What a one-shot run printed, stdout and stderr apart.
#[derive(Debug, Clone)]
pub struct SplitOutput {
    /// The exit code; None if killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Bridge {
    /// Runs `plex-mqtt-bridge --config <tempdir>/config.toml` with `config` (a [`super::BridgeConfig`] or the
    /// text) in the file.
    pub fn start(config: &(impl ConfigText + ?Sized)) -> Bridge {
        Self::start_with(&[], &[], Some(&config.config_text()))
    }

    /// Runs the daemon with `args` (after `--config <file>` when `config` is given) and `envs` added to the
    /// cleaned environment.
    pub fn start_with(args: &[&str], envs: &[(&str, &str)], config: Option<&str>) -> Bridge {
        Self::launch(Path::new(BIN), args, envs, config, None)
    }

    /// Like [`Bridge::start`], with the daemon's file-descriptor limit, soft and hard, at `limit` (so it cannot
    /// raise it): a real EMFILE once it holds that many.
    pub fn start_with_fd_limit(config: &(impl ConfigText + ?Sized), limit: u64) -> Bridge {
        Self::launch(Path::new(BIN), &[], &[], Some(&config.config_text()), Some((limit, limit)))
    }

    /// The daemon at `program` (another build, for a benchmark comparing commits) with its file-descriptor limit
    /// at `fd_limit` (soft, hard; `None`: this process's).
    pub fn start_program(program: &Path, config: &(impl ConfigText + ?Sized), fd_limit: Option<(u64, u64)>) -> Bridge {
        Self::launch(program, &[], &[], Some(&config.config_text()), fd_limit)
    }

    fn launch(
        program: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        config: Option<&str>,
        fd_limit: Option<(u64, u64)>,
    ) -> Bridge {
        let dir = tempdir("bridge-test-");
        let config_path = config.map(|toml| write_config(dir.path(), toml));
        let log_path = dir.path().join("bridge.log");
        let log = File::create(&log_path).expect("create bridge.log");
        let log_err = log.try_clone().expect("clone the bridge.log handle");
        let mut cmd = command_for(program, args, envs, config_path.as_deref());
        if let Some((soft, hard)) = fd_limit {
            limit_fds(&mut cmd, soft, hard);
        }
        let child = cmd
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        Bridge { child, dir, log_path, config_path, exit: None }
    }

    /// Runs the daemon until it exits (e.g. a bad config) and returns its exit code (None: killed by a
    /// signal) and its stdout and stderr interleaved. Panics, with the output, if it is still running after
    /// `timeout`. Waits without blocking the runtime, so a fake PMS in the same test keeps serving.
    pub async fn run_to_exit(
        args: &[&str],
        envs: &[(&str, &str)],
        config: Option<&str>,
        timeout: Duration,
    ) -> (Option<i32>, String) {
        let mut bridge = Self::start_with(args, envs, config);
        match bridge.wait_exit(timeout).await {
            Some(status) => (status.code(), bridge.logs()),
            None => panic!("plex-mqtt-bridge {args:?} did not exit within {timeout:?}; output:\n{}", bridge.logs()),
        }
    }

    /// [`Bridge::run_to_exit`] for synchronous tests (blocks the thread).
    pub fn run_to_exit_blocking(
        args: &[&str],
        envs: &[(&str, &str)],
        config: Option<&str>,
        timeout: Duration,
    ) -> (Option<i32>, String) {
        let mut bridge = Self::start_with(args, envs, config);
        match bridge.wait_exit_blocking(timeout) {
            Some(status) => (status.code(), bridge.logs()),
            None => panic!("plex-mqtt-bridge {args:?} did not exit within {timeout:?}; output:\n{}", bridge.logs()),
        }
    }

    /// Like [`Bridge::run_to_exit`], with stdout and stderr captured apart (e.g. `--print-config`, whose stdout
    /// must be only the config).
    pub async fn run_to_exit_split(
        args: &[&str],
        envs: &[(&str, &str)],
        config: Option<&str>,
        timeout: Duration,
    ) -> SplitOutput {
        let dir = tempdir("bridge-run-");
        let config_path = config.map(|toml| write_config(dir.path(), toml));
        let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
        let mut child = command(args, envs, config_path.as_deref())
            .stdout(Stdio::from(File::create(&out_path).expect("create stdout file")))
            .stderr(Stdio::from(File::create(&err_path).expect("create stderr file")))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
        let exited = wait::poll(timeout, async || child.try_wait().expect("try_wait on plex-mqtt-bridge")).await;
        let Some(status) = exited else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "plex-mqtt-bridge {args:?} did not exit within {timeout:?}; stdout:\n{}\nstderr:\n{}",
                read_lossy(&out_path),
                read_lossy(&err_path)
            );
        };
        SplitOutput { code: status.code(), stdout: read_lossy(&out_path), stderr: read_lossy(&err_path) }
    }

    /// Everything the daemon wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// Waits until the log contains `needle`; false on timeout.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait::poll(timeout, async || self.logs().contains(needle).then_some(())).await.is_some()
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The tempdir holding the config file and the log (tests may put other files there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file, if the daemon was started with one.
    pub fn config_path(&self) -> Option<&Path> {
        self.config_path.as_deref()
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends SIGINT (Ctrl-C).
    pub fn sigint(&self) {
        self.signal("INT");
    }

    /// Sends a signal by name (`TERM`, `INT`, `HUP`, …) with `kill(1)`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .stdin(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("run `kill -{name} {}`: {e}", self.pid()));
        assert!(status.success(), "`kill -{name} {}` failed: {status}", self.pid());
    }

    /// Waits for the daemon to exit; None if it is still running after `timeout`. Does not block the
    /// runtime.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait::poll(timeout, async || self.try_exit()).await
    }

    /// [`Bridge::wait_exit`] for synchronous tests (blocks the thread).
    pub fn wait_exit_blocking(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait::poll_blocking(timeout, || self.try_exit())
    }

    /// Whether the daemon is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// Kills the daemon (SIGKILL: no graceful shutdown, no `offline` published except by the last will).
    pub fn kill(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            if let Ok(status) = self.child.wait() {
                self.exit = Some(status);
            }
        }
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("try_wait on plex-mqtt-bridge");
        }
        self.exit
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- plex-mqtt-bridge log (pid {}) -----\n{}\n----- end of plex-mqtt-bridge log -----",
                self.child.id(),
                self.logs()
            );
        }
    }
}

fn command(args: &[&str], envs: &[(&str, &str)], config_path: Option<&Path>) -> Command {
    command_for(Path::new(BIN), args, envs, config_path)
}

fn command_for(program: &Path, args: &[&str], envs: &[(&str, &str)], config_path: Option<&Path>) -> Command {
    let mut cmd = Command::new(program);
    if let Some(path) = config_path {
        cmd.arg("--config").arg(path);
    }
    cmd.args(args).stdin(Stdio::null());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with(ENV_PREFIX) {
            cmd.env_remove(&key);
        }
    }
    cmd.env_remove("RUST_LOG").env("NO_COLOR", "1");
    for (key, value) in envs {
        cmd.env(key, value);
    }
    cmd
}

/// Sets the child's `RLIMIT_NOFILE` to `soft` and `hard` before it runs.
fn limit_fds(cmd: &mut Command, soft: u64, hard: u64) {
    use std::os::unix::process::CommandExt;
    let wanted = libc::rlimit { rlim_cur: soft as libc::rlim_t, rlim_max: hard as libc::rlim_t };
    // SAFETY: runs in the forked child before exec; setrlimit is async-signal-safe and touches no memory shared
    // with the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().expect("create a tempdir")
}

fn write_config(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("config.toml");
    fs::write(&path, toml).expect("write the bridge config file");
    path
}

fn read_lossy(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// `s` as a TOML basic string, quotes included (for configs written by hand, e.g. the benchmarks').
pub fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A token file in its own tempdir (removed on Drop). [`TokenFile::set`] replaces the token atomically, for
/// tests of token rotation without a restart.
pub struct TokenFile {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl TokenFile {
    /// Writes `token` (no trailing newline) to `<tempdir>/plex_token`.
    pub fn new(token: &str) -> TokenFile {
        let dir = tempdir("plex-token-");
        let path = dir.path().join("plex_token");
        fs::write(&path, token).expect("write the token file");
        TokenFile { dir, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the content with `contents` (written to a temp file, then renamed over the old one).
    pub fn set(&self, contents: &str) {
        let tmp = self.dir.path().join("plex_token.tmp");
        fs::write(&tmp, contents).expect("write the new token file");
        fs::rename(&tmp, &self.path).expect("rename the new token file into place");
    }
}
