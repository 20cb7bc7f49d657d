//! `plex-mqtt-bridge login`: gets a token from plex.tv with a PIN (the user approves it in a browser on any
//! device), writes it to the token file, and finds the account's Plex servers so the user gets a ready
//! `[[servers]]` block.
//!
//! With `--jwt` (the default) the PIN carries the device's public key, so the token is a Plex JWT that the
//! daemon can renew on its own with the key file written beside the token. The token is never printed; only
//! the files hold it (mode 0600, directories created 0700).

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use reqwest::Url;

use crate::config::{self, TokenSource};
use crate::plex::http::{build_client, PlexHttp};
use crate::plextv::device_key::DeviceKey;
use crate::plextv::resources::{servers, Resource};
use crate::plextv::token::verify_plex_jwt;
use crate::plextv::{PlexTv, PlexTvError};
use crate::secret::Secret;

/// `login`'s flags: where to put what it gets.
#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// Where to write the token (default: $STATE_DIRECTORY/plex_token under systemd).
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Where to write the device key (default: the token file's path with `.key` appended).
    #[arg(long, value_name = "PATH")]
    device_key_file: Option<PathBuf>,
    /// Append the [[servers]] block to this configuration file instead of printing it.
    #[arg(long, value_name = "PATH")]
    write_config: Option<PathBuf>,
    /// Take this server (name or machineIdentifier) instead of the first one the account owns.
    #[arg(long, value_name = "NAME")]
    server: Option<String>,
    /// A renewable Plex JWT (default). --jwt=false gets a long-lived legacy token instead.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    jwt: bool,
    /// A long code in a link (app.plex.tv) instead of a 4-character code for plex.tv/link.
    #[arg(long)]
    strong: bool,
    /// plex.tv's base URL.
    #[arg(long, value_name = "URL", default_value = config::DEFAULT_PLEXTV_URL)]
    plextv_url: String,
}

/// Runs `login` (before, and without, the configuration: it is how a first configuration is made). Exit 0 when
/// done, 2 when the PIN expired, 1 on other failures, 78 for bad arguments.
pub fn main(args: &LoginArgs) -> ExitCode {
    let token_file = match args
        .token_file
        .clone()
        .or_else(|| std::env::var_os("STATE_DIRECTORY").map(|dir| PathBuf::from(dir).join("plex_token")))
    {
        Some(path) => path,
        None => {
            eprintln!("plex-mqtt-bridge login: --token-file is missing; give the path the token should be written to");
            return ExitCode::from(super::EX_CONFIG);
        }
    };
    let plextv_url = match config::parse_plextv_url(&args.plextv_url, "--plextv-url") {
        Ok(url) => url,
        Err(error) => {
            eprintln!("plex-mqtt-bridge login: {error}");
            return ExitCode::from(super::EX_CONFIG);
        }
    };
    let options = LoginOptions {
        device_key_file: args.device_key_file.clone().unwrap_or_else(|| config::default_device_key_file(&token_file)),
        token_file,
        plextv_url,
        jwt: args.jwt,
        strong: args.strong,
        write_config: args.write_config.clone(),
        print_block: true,
        server: args.server.clone(),
        poll_interval: Duration::from_secs(1),
        request_timeout: Duration::from_secs(15),
    };
    let Some(runtime) = super::runtime() else { return ExitCode::FAILURE };
    match runtime.block_on(run(&options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("plex-mqtt-bridge login: {error}");
            ExitCode::from(if matches!(error, LoginError::PinExpired) { 2 } else { 1 })
        }
    }
}

/// What `login` was asked to do.
#[derive(Debug, Clone)]
pub struct LoginOptions {
    pub token_file: PathBuf,
    pub device_key_file: PathBuf,
    pub plextv_url: Url,
    pub jwt: bool,
    pub strong: bool,
    pub write_config: Option<PathBuf>,
    /// Without `write_config`, print the block (the command) or only say which address answered (add-on mode,
    /// whose options hold the server's URL).
    pub print_block: bool,
    /// Pick this server (name or machineIdentifier) instead of the first owned one.
    pub server: Option<String>,
    pub poll_interval: Duration,
    pub request_timeout: Duration,
}

/// How `login` ended, for the exit code.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The PIN expired (exit 2): nothing was written.
    #[error("{}", PlexTvError::PinExpired)]
    PinExpired,
    /// Anything else (exit 1).
    #[error("{0}")]
    Failed(String),
}

impl From<PlexTvError> for LoginError {
    fn from(error: PlexTvError) -> Self {
        match error {
            PlexTvError::PinExpired => LoginError::PinExpired,
            other => LoginError::Failed(other.to_string()),
        }
    }
}

/// Runs the whole login; progress goes to stderr, the config block to stdout.
pub async fn run(options: &LoginOptions) -> Result<(), LoginError> {
    crate::tls::install_crypto_provider();
    // The device identity: the key file's if there is one (re-login keeps the device), else a new random one.
    let key = match DeviceKey::load(&options.device_key_file) {
        Ok(key) if options.jwt => key,
        _ => DeviceKey::generate(&random_identifier()?)?,
    };
    let device_name = format!("plex-mqtt-bridge ({})", hostname());
    let plextv = PlexTv::new(&options.plextv_url, key.client_identifier(), &device_name, options.request_timeout)?;
    let pin = plextv.create_pin(options.strong, options.jwt.then(|| key.public_jwk()).as_ref()).await?;
    let lifetime = Duration::from_secs(pin.expires_in.unwrap_or(1800).max(1));
    eprintln!();
    if options.strong {
        let link = format!(
            "https://app.plex.tv/auth#?clientID={}&code={}&context%5Bdevice%5D%5Bproduct%5D=plex-mqtt-bridge",
            key.client_identifier(),
            pin.code
        );
        eprintln!("Open this link and sign in to Plex to let plex-mqtt-bridge in:\n\n    {link}\n");
    } else {
        eprintln!("On any device, open  https://plex.tv/link  and enter this code:\n\n    {}\n", pin.code);
    }
    let token = wait_for_approval(&plextv, &key, pin.id, lifetime, options).await?;
    eprintln!("Approved.");
    let token = if options.jwt {
        // A PIN with a JWK yields a JWT and registers the key; should plex.tv answer a legacy token anyway,
        // register the key with it and exchange it, so the daemon can renew from now on.
        let token = if crate::plextv::token::TokenKind::of(token.expose()) == crate::plextv::token::TokenKind::Legacy {
            plextv.register_jwk(&token, &key.public_jwk()).await?;
            plextv.exchange(&key).await?
        } else {
            token
        };
        let keys = plextv.keys().await?;
        verify_plex_jwt(token.expose(), &keys)?;
        key.save(&options.device_key_file)?;
        token
    } else {
        token
    };
    finish(options, &plextv, token, key.client_identifier(), &device_name).await
}

/// Writes the token, then finds the server and its best address and writes or prints the config block.
async fn finish(
    options: &LoginOptions,
    plextv: &PlexTv,
    token: Secret,
    client_identifier: &str,
    device_name: &str,
) -> Result<(), LoginError> {
    crate::atomic_file::write_private(&options.token_file, format!("{}\n", token.expose()).as_bytes()).map_err(
        |e| LoginError::Failed(format!("cannot write the token file {}: {e}", options.token_file.display())),
    )?;
    eprintln!("Token written to {} (mode 0600).", options.token_file.display());
    if options.jwt {
        eprintln!("Device key written to {}: the bridge renews the token with it.", options.device_key_file.display());
    }

    let list = servers(plextv.resources(&token).await?);
    if list.is_empty() {
        return Err(LoginError::Failed("this Plex account has no Plex Media Server; the token is saved".into()));
    }
    eprintln!("\nServers of this account:");
    for server in &list {
        eprintln!(
            "  {} {} ({} connection(s))",
            if server.owned { "owned " } else { "shared" },
            server.name.as_deref().unwrap_or("?"),
            server.connections.len()
        );
    }
    let chosen = pick(&list, options.server.as_deref())?;
    if !chosen.owned {
        eprintln!("warning: this server is shared with you; its notifications need the owner's token");
    }
    let headers = crate::plex::client_headers_for(client_identifier, device_name);
    let url = reachable_url(chosen, &token, headers, options.request_timeout).await?;
    let block = server_block(chosen, &url, &options.token_file);
    match &options.write_config {
        Some(path) => {
            append_block(path, &block)?;
            eprintln!("\nAdded this to {}:\n\n{block}", path.display());
        }
        None if options.print_block => {
            eprintln!("\nPut this in the bridge's configuration file:\n");
            print!("{block}");
        }
        None => {
            eprintln!("\n{:?} answers at {}", chosen.name.as_deref().unwrap_or("?"), url.as_str().trim_end_matches('/'))
        }
    }
    Ok(())
}

/// Polls the PIN until it carries a token or expires, with a spinner on a terminal.
async fn wait_for_approval(
    plextv: &PlexTv,
    key: &DeviceKey,
    id: u64,
    lifetime: Duration,
    options: &LoginOptions,
) -> Result<Secret, LoginError> {
    let started = tokio::time::Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let frames = ['|', '/', '-', '\\'];
    let mut printed_at = None::<tokio::time::Instant>;
    for tick in 0usize.. {
        let left = lifetime.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        if terminal {
            eprint!(
                "\r{} waiting for approval … {:>2}:{:02} left ",
                frames[tick % 4],
                left.as_secs() / 60,
                left.as_secs() % 60
            );
            let _ = std::io::stderr().flush();
        } else if printed_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(30)) {
            eprintln!("waiting for approval ({} s left)", left.as_secs());
            printed_at = Some(tokio::time::Instant::now());
        }
        // A passing failure (network, plex.tv busy) must not end a login the user is completing: it is
        // retried until the PIN's time is up; only a refusal ends it.
        let polled = async {
            let device_jwt = if options.jwt { Some(plextv.signed_nonce(key).await?) } else { None };
            plextv.poll_pin(id, device_jwt.as_deref()).await
        };
        match polled.await {
            Ok(None) => break,
            Ok(Some(pin)) => {
                if let Some(token) = pin.auth_token.filter(|t| !t.is_empty()) {
                    if terminal {
                        eprintln!();
                    }
                    return Ok(token);
                }
                if pin.expires_in == Some(0) {
                    break;
                }
            }
            Err(error @ (PlexTvError::Transport(_) | PlexTvError::Status { status: 429 | 500..=599, .. })) => {
                if terminal {
                    eprint!("\r{error}; retrying … ");
                } else {
                    eprintln!("{error}; retrying");
                }
            }
            Err(error) => return Err(error.into()),
        }
        tokio::time::sleep(options.poll_interval).await;
    }
    if terminal {
        eprintln!();
    }
    Err(LoginError::PinExpired)
}

/// The server asked for, or the first owned one (servers are sorted owned first).
fn pick<'a>(list: &'a [Resource], wanted: Option<&str>) -> Result<&'a Resource, LoginError> {
    match wanted {
        None => list.first().ok_or_else(|| LoginError::Failed("no server".into())),
        Some(wanted) => list
            .iter()
            .find(|s| s.name.as_deref() == Some(wanted) || s.client_identifier.as_deref() == Some(wanted))
            .ok_or_else(|| LoginError::Failed(format!("no server named {wanted:?} in this account"))),
    }
}

/// The first of the server's ranked connections that answers `/` with this token and the server's own
/// machineIdentifier (so a stale address that now belongs to another server is not taken).
async fn reachable_url(
    server: &Resource,
    token: &Secret,
    headers: reqwest::header::HeaderMap,
    timeout: Duration,
) -> Result<Url, LoginError> {
    let mut tried = Vec::new();
    let https = crate::tls::client_config(&crate::tls::TlsOptions::default()).ok();
    for connection in server.ranked_connections() {
        let Ok(url) = Url::parse(&connection.uri) else { continue };
        let tls = if url.scheme() == "https" { https.clone() } else { None };
        let Ok(client) = build_client(headers.clone(), timeout, tls) else { continue };
        let http = PlexHttp::new(client, url.clone(), TokenSource::Inline(token.clone()), timeout)
            .with_max_response_size(1024 * 1024);
        eprint!("Trying {} … ", crate::plex::redirect::origin(&url));
        match http.identity().await {
            Ok(identity) if server.client_identifier.as_deref().is_none_or(|id| id == identity.machine_identifier) => {
                eprintln!("ok (\"{}\", Plex Media Server {})", identity.friendly_name, identity.version);
                let mut base = url.clone();
                base.set_path("");
                return Ok(base);
            }
            Ok(_) => {
                eprintln!("another server answers there");
                tried.push(format!("{}: another server", connection.uri));
            }
            Err(error) => {
                eprintln!("{error}");
                tried.push(format!("{}: {error}", connection.uri));
            }
        }
    }
    Err(LoginError::Failed(format!(
        "none of the server's addresses answered from here ({}); the token is saved — set `url` by hand",
        tried.join("; ")
    )))
}

/// A ready `[[servers]]` table.
fn server_block(server: &Resource, url: &Url, token_file: &Path) -> String {
    let name = server.name.as_deref().unwrap_or("plex");
    let topic = crate::topic::ServerName::derived(name, server.client_identifier.as_deref().unwrap_or("plex"));
    format!(
        "[[servers]]\n# {name}\nname = {}\nurl = {}\ntoken_file = {}\n",
        toml_string(topic.as_str()),
        toml_string(url.as_str().trim_end_matches('/')),
        toml_string(&token_file.display().to_string())
    )
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// Adds the block to the config file (created 0600 if missing; an existing file keeps its mode).
fn append_block(path: &Path, block: &str) -> Result<(), LoginError> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(LoginError::Failed(format!("cannot read {}: {e}", path.display()))),
    };
    let mut text = existing.clone();
    if !text.is_empty() && !text.ends_with("\n\n") {
        text.push_str(if text.ends_with('\n') { "\n" } else { "\n\n" });
    }
    text.push_str(block);
    let written = if existing.is_empty() {
        crate::atomic_file::write_private(path, text.as_bytes())
    } else {
        std::fs::write(path, text)
    };
    written.map_err(|e| LoginError::Failed(format!("cannot write {}: {e}", path.display())))
}

/// A random client identifier (UUID-shaped) for a new device.
fn random_identifier() -> Result<String, PlexTvError> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| PlexTvError::Key("the system random generator failed".into()))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]))
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into())
}
