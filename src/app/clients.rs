//! The servers' HTTP clients, shared: one rustls configuration and one HTTP client per distinct TLS setting, not
//! one per server.
//!
//! Building a client with the platform's trust store reads the whole system CA store (about 150 files, 90 kB of
//! memory and a few milliseconds of CPU), and reqwest does that even for an `http://` server unless it is handed
//! a configuration. Servers with the same TLS options (all `http://` servers, and every `https://` server that
//! trusts the platform's roots) therefore share one client; its connection pool keeps their connections apart
//! by host. Preparing hundreds of servers then costs one build, so their supervisors start at once.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::Client;

use super::BridgeError;
use crate::config::ServerConfig;
use crate::plex::http::build_client;
use crate::tls::TlsOptions;

/// The clients built so far, by TLS options (a handful at most, so a list).
pub struct Clients {
    headers: HeaderMap,
    connect_timeout: Duration,
    built: Vec<(TlsOptions, Arc<rustls::ClientConfig>, Client)>,
}

impl Clients {
    /// Clients that send `headers` and give up connecting after `connect_timeout`.
    pub fn new(headers: HeaderMap, connect_timeout: Duration) -> Self {
        Clients { headers, connect_timeout, built: Vec::new() }
    }

    /// The TLS configuration of `server` (`None` for `http://`, whose notification socket needs none) and the
    /// client for its REST calls, built on first use of its TLS options.
    pub fn for_server(
        &mut self,
        server: &ServerConfig,
    ) -> Result<(Option<Arc<rustls::ClientConfig>>, Client), BridgeError> {
        let index = match self.built.iter().position(|(options, ..)| *options == server.tls) {
            Some(index) => index,
            None => {
                let tls = crate::tls::client_config(&server.tls)?;
                let client = build_client(self.headers.clone(), self.connect_timeout, Some(tls.clone()))?;
                self.built.push((server.tls.clone(), tls, client));
                self.built.len() - 1
            }
        };
        let (_, tls, client) = &self.built[index];
        let tls = server.uses_tls().then(|| tls.clone());
        Ok((tls, client.clone()))
    }

    /// How many distinct clients were built.
    pub fn len(&self) -> usize {
        self.built.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load, Sources};

    #[test]
    fn servers_with_the_same_tls_options_share_one_client() {
        crate::tls::install_crypto_provider();
        let servers = r#"[{url="http://10.0.0.1:32400",token="t",name="a"},{url="https://10.0.0.2:32400",token="t",name="b"},{url="http://10.0.0.3:32400",token="t",name="c"},{url="https://10.0.0.4:32400",token="t",name="d",insecure_skip_verify=true}]"#;
        let env = vec![("PLEX_MQTT_BRIDGE_SERVERS".to_owned(), servers.to_owned())];
        let config = load(&Sources { env, ..Sources::default() }).expect("a valid configuration");
        let mut clients = Clients::new(HeaderMap::new(), Duration::from_secs(1));
        let tls: Vec<bool> =
            config.servers.iter().map(|server| clients.for_server(server).expect("a client").0.is_some()).collect();
        assert_eq!(tls, [false, true, false, true], "a TLS configuration for https:// servers only");
        assert_eq!(clients.len(), 2, "one for the platform's roots (http:// and https://), one without checks");
    }
}
