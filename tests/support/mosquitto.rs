//! A real Mosquitto broker for one test, on a free loopback port, with its config and log in a tempdir.
//!
//! The broker runs without persistence, so a [`Mosquitto::restart`] forgets every retained message and every
//! session: exactly what a bridge must survive. Tests never skip when Mosquitto is missing: they fail with an
//! install hint.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::wait;

/// How long a fresh broker may take to accept MQTT connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Mosquitto::restart`] keeps retrying to bind the old port.
const REBIND_TIMEOUT: Duration = Duration::from_secs(5);
/// Fresh ports tried by [`Mosquitto::start`] when another process grabbed the one picked.
const PORT_ATTEMPTS: usize = 5;

const NOT_FOUND: &str = "mosquitto not found: `bash tests/run` installs it (or `apt-get install -y mosquitto`); \
                         tests need a real broker, they never skip";

/// A running Mosquitto broker; killed on Drop.
pub struct Mosquitto {
    binary: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    password: Option<(String, String)>,
    extra_config: String,
    child: Option<Child>,
}

/// Why one spawn attempt did not give a ready broker.
enum SpawnError {
    /// The process exited (typically: the port is taken).
    Exited(String),
    /// Still running but not answering MQTT in time.
    NotReady,
}

impl Mosquitto {
    /// Starts an anonymous broker on a free port of 127.0.0.1.
    pub fn start() -> Mosquitto {
        Self::start_inner(None, "")
    }

    /// Starts a broker that accepts only `user`/`pass` (`allow_anonymous false`).
    pub fn start_with_password(user: &str, pass: &str) -> Mosquitto {
        Self::start_inner(Some((user.to_owned(), pass.to_owned())), "")
    }

    /// Starts an anonymous broker with extra `mosquitto.conf` lines appended (e.g. `max_packet_size 1000`).
    pub fn start_with_extra_config(extra: &str) -> Mosquitto {
        Self::start_inner(None, extra)
    }

    fn start_inner(password: Option<(String, String)>, extra: &str) -> Mosquitto {
        let binary = find_binary("mosquitto", &["/usr/sbin", "/usr/local/sbin"]).expect(NOT_FOUND);
        let dir = tempfile::Builder::new().prefix("mosquitto-test-").tempdir().expect("create a tempdir for mosquitto");
        if let Some((user, pass)) = &password {
            write_password_file(&dir.path().join("passwd"), user, pass);
        }
        let mut broker = Mosquitto { binary, dir, port: 0, password, extra_config: extra.to_owned(), child: None };
        let mut failures = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            broker.port = free_port();
            match broker.spawn_and_wait(Instant::now() + START_TIMEOUT) {
                Ok(()) => return broker,
                Err(SpawnError::Exited(status)) => failures.push(format!("port {}: {status}", broker.port)),
                Err(SpawnError::NotReady) => panic!(
                    "mosquitto did not accept MQTT connections on 127.0.0.1:{} within {START_TIMEOUT:?}; log:\n{}",
                    broker.port,
                    broker.log()
                ),
            }
        }
        panic!("mosquitto failed to start ({}); log:\n{}", failures.join("; "), broker.log());
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The tempdir holding `mosquitto.conf`, `mosquitto.log` and (with a password) `passwd`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the broker process is alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the broker (SIGKILL: clients see the connection drop, as after a crash) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Errors mean it already exited; wait() reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the broker and starts a new one on the same port, with the same config (retained messages and
    /// sessions are gone: persistence is off). Retries the bind for up to 5 s.
    pub fn restart(&mut self) {
        self.stop();
        // The port may still be held (e.g. by a socket in a closing state): try again until it is free.
        let mut exited = String::new();
        let outcome =
            wait::poll_blocking(REBIND_TIMEOUT, || match self.spawn_and_wait(Instant::now() + START_TIMEOUT) {
                Err(SpawnError::Exited(status)) => {
                    exited = status;
                    None
                }
                other => Some(other),
            });
        match outcome {
            Some(Ok(())) => {}
            None => panic!(
                "mosquitto could not restart on port {} within {REBIND_TIMEOUT:?} ({exited}); log:\n{}",
                self.port,
                self.log()
            ),
            Some(Err(_)) => panic!(
                "restarted mosquitto did not accept MQTT connections on 127.0.0.1:{} within {START_TIMEOUT:?}; log:\n{}",
                self.port,
                self.log()
            ),
        }
    }

    /// Everything the broker logged so far (across restarts).
    pub fn log(&self) -> String {
        match fs::read(self.log_path()) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!("<no mosquitto log: {e}>"),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }

    fn write_config(&self) -> PathBuf {
        let dir = self.dir.path();
        let mut conf = String::new();
        conf.push_str("# written by tests/support/mosquitto.rs\n");
        conf.push_str(&format!("listener {} 127.0.0.1\n", self.port));
        match &self.password {
            Some(_) => {
                conf.push_str("allow_anonymous false\n");
                conf.push_str(&format!("password_file {}\n", dir.join("passwd").display()));
            }
            None => conf.push_str("allow_anonymous true\n"),
        }
        conf.push_str(concat!(
            "persistence false\n",
            "max_queued_messages 100000\n",
            // 0 = no limit on QoS 1/2 messages in flight to one client (valid in mosquitto 2.0).
            "max_inflight_messages 0\n",
            // Only has an effect when started as root: stay root, so the broker can read the password file
            // in the (0700) tempdir instead of dropping to the `mosquitto` user.
            "user root\n",
            // stderr is redirected to mosquitto.log by the harness (no file permission issues after a
            // privilege drop, and restarts append to the same file).
            "log_dest stderr\n",
            "log_type error\n",
            "log_type warning\n",
            "log_type notice\n",
            "log_type information\n",
            "log_type subscribe\n",
            "log_type unsubscribe\n",
            "connection_messages true\n",
            "log_timestamp true\n",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S\n",
        ));
        if !self.extra_config.is_empty() {
            conf.push_str(&self.extra_config);
            conf.push('\n');
        }
        let path = dir.join("mosquitto.conf");
        fs::write(&path, conf).expect("write mosquitto.conf");
        path
    }

    /// Spawns the broker on `self.port` and waits until it answers an MQTT CONNECT.
    fn spawn_and_wait(&mut self, deadline: Instant) -> Result<(), SpawnError> {
        let conf = self.write_config();
        let log = OpenOptions::new().create(true).append(true).open(self.log_path()).expect("open mosquitto.log");
        let log_err = log.try_clone().expect("clone mosquitto.log handle");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.binary.display()));
        self.child = Some(child);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let ready = wait::poll_blocking(deadline.saturating_duration_since(Instant::now()), || {
            if let Some(exited) = self.exited() {
                return Some(Err(exited));
            }
            // Checked again after the CONNACK: the broker that answered is ours and not a squatter on the port.
            mqtt_connack(addr).then(|| self.exited().map_or(Ok(()), Err))
        });
        ready.unwrap_or_else(|| {
            self.stop();
            Err(SpawnError::NotReady)
        })
    }

    /// The broker process has exited (why), if it has.
    fn exited(&mut self) -> Option<SpawnError> {
        let status = self.child.as_mut().and_then(|child| child.try_wait().ok().flatten())?;
        self.child = None;
        Some(SpawnError::Exited(status.to_string()))
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// True if an MQTT 3.1.1 CONNECT on `addr` gets a CONNACK (any return code: a broker that wants a password
/// still answers). This is the readiness check: an open port alone could belong to another process.
fn mqtt_connack(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(250)) else {
        return false;
    };
    let timeout = Some(Duration::from_millis(500));
    if stream.set_read_timeout(timeout).is_err() || stream.set_write_timeout(timeout).is_err() {
        return false;
    }
    let client_id = b"harness-ready-check";
    let mut variable = Vec::new();
    variable.extend_from_slice(&[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x0a]);
    variable.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    variable.extend_from_slice(client_id);
    let mut packet = vec![0x10, variable.len() as u8];
    packet.extend_from_slice(&variable);
    if stream.write_all(&packet).is_err() {
        return false;
    }
    let mut connack = [0u8; 4];
    if stream.read_exact(&mut connack).is_err() || connack[0] != 0x20 || connack[1] != 0x02 {
        return false;
    }
    // DISCONNECT, so the broker logs a clean disconnect instead of an error.
    let _ = stream.write_all(&[0xe0, 0x00]);
    true
}

/// A port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0 to pick a free port");
    listener.local_addr().expect("local_addr of a bound listener").port()
}

/// `name` on PATH, else in one of `fallback_dirs`.
pub fn find_binary(name: &str, fallback_dirs: &[&str]) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(fallback_dirs.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn write_password_file(path: &Path, user: &str, pass: &str) {
    let tool = find_binary("mosquitto_passwd", &["/usr/bin", "/usr/local/bin", "/usr/sbin", "/usr/local/sbin"]).expect(
        "mosquitto_passwd not found: it ships with mosquitto (`bash tests/run` installs it); \
             Mosquitto::start_with_password needs it to hash the password",
    );
    let output = Command::new(&tool)
        .arg("-b")
        .arg("-c")
        .arg(path)
        .arg(user)
        .arg(pass)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", tool.display()));
    assert!(
        output.status.success(),
        "mosquitto_passwd -b -c failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Newer mosquitto versions warn about (or refuse) a password file others can read.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod 600 the password file");
    }
}
