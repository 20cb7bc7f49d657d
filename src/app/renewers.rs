//! One token renewer per token file (servers of one account usually share one file).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, ServerConfig, TokenSource};
use crate::plex::http::PlexHttp;
use crate::plextv::renew::{RenewalHandle, Renewer};
use crate::telemetry::health::ServerHealth;

/// Token renewal retries: the first failure is retried after about this long …
const RENEWAL_RETRY_MIN: Duration = Duration::from_secs(10);
/// … and the delay grows to at most this (a Plex JWT is renewed a day before it expires, so there is time).
const RENEWAL_RETRY_MAX: Duration = Duration::from_secs(3600);

/// A server as the wiring prepared it: its config, TLS, REST client and health record.
pub(super) type Prepared<'a> = (&'a ServerConfig, Option<Arc<rustls::ClientConfig>>, PlexHttp, ServerHealth);

/// Starts the renewers; returns each server's handle (`None` for an inline token: there is no file to renew
/// into). Each server's health record learns its token file, whose status the renewer reports.
pub(super) fn start(config: &Config, servers: &[Prepared<'_>], stop: &CancellationToken) -> Vec<Option<RenewalHandle>> {
    let mut by_file: Vec<(std::path::PathBuf, Vec<usize>)> = Vec::new();
    for (index, (server, _, _, health)) in servers.iter().enumerate() {
        if let TokenSource::File(path) = &server.token {
            let path = crate::config::resolve_credential(path);
            health.set_token_file(&path.display().to_string());
            match by_file.iter_mut().find(|(p, _)| *p == path) {
                Some((_, users)) => users.push(index),
                None => by_file.push((path, vec![index])),
            }
        }
    }
    let mut handles = vec![None; servers.len()];
    for (token_file, users) in by_file {
        let renewer = Renewer {
            key_file: config.plex.device_key_for(&token_file),
            token_file,
            plextv_url: config.plex.plextv_url.clone(),
            device_name: config.plex.device_name.clone(),
            renew_before: config.plex.renew_before,
            request_timeout: config.plex.request_timeout,
            retry_min: RENEWAL_RETRY_MIN,
            retry_max: RENEWAL_RETRY_MAX,
            servers: users.iter().map(|&i| (servers[i].0.label().to_owned(), servers[i].2.clone())).collect(),
        };
        let handle = renewer.spawn(stop.clone());
        for i in users {
            handles[i] = Some(handle.clone());
        }
    }
    handles
}
