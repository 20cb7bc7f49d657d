//! The account's servers from `/api/v2/resources`, and which of a server's addresses to try first.

use serde::Deserialize;

use crate::lenient;

/// One device of the account.
#[derive(Debug, Clone, Deserialize)]
pub struct Resource {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub provides: Option<String>,
    /// The PMS machineIdentifier.
    #[serde(default, rename = "clientIdentifier", deserialize_with = "lenient::opt_string")]
    pub client_identifier: Option<String>,
    #[serde(default)]
    pub owned: bool,
    #[serde(default)]
    pub connections: Vec<Connection>,
}

/// One address a server can be reached at.
#[derive(Debug, Clone, Deserialize)]
pub struct Connection {
    pub uri: String,
    #[serde(default)]
    pub local: bool,
    #[serde(default)]
    pub relay: bool,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub protocol: Option<String>,
}

impl Resource {
    /// Whether it is a Plex Media Server.
    pub fn is_server(&self) -> bool {
        self.provides.as_deref().is_some_and(|p| p.split(',').any(|p| p.trim() == "server"))
    }

    /// Its connections in the order to try them: never a relay (it is slow and bandwidth-capped, and the
    /// notification socket would go through Plex's servers); local before remote; within those, HTTPS
    /// `plex.direct` (a valid certificate for this very server) before other HTTPS before plain HTTP.
    pub fn ranked_connections(&self) -> Vec<&Connection> {
        let mut connections: Vec<&Connection> = self.connections.iter().filter(|c| !c.relay).collect();
        connections.sort_by_key(|c| {
            let https = c.uri.starts_with("https://") || c.protocol.as_deref() == Some("https");
            let plex_direct = https && c.uri.contains(".plex.direct");
            (!c.local, !plex_direct, !https)
        });
        connections
    }
}

/// Servers first owned, then shared, each group in plex.tv's order.
pub fn servers(resources: Vec<Resource>) -> Vec<Resource> {
    let mut servers: Vec<Resource> = resources.into_iter().filter(Resource::is_server).collect();
    servers.sort_by_key(|s| !s.owned);
    servers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_https_plex_direct_first_relays_never() {
        let resource: Resource = serde_json::from_value(serde_json::json!({
            "name": "nas", "provides": "server", "clientIdentifier": "abc", "owned": true,
            "connections": [
                {"uri": "https://1-2-3-4.abc.plex.direct:32400", "local": false, "relay": false, "protocol": "https"},
                {"uri": "http://192.168.1.10:32400", "local": true, "relay": false, "protocol": "http"},
                {"uri": "https://192-168-1-10.abc.plex.direct:32400", "local": true, "relay": false, "protocol": "https"},
                {"uri": "https://relay.plex.direct:8443", "local": false, "relay": true, "protocol": "https"}
            ]
        }))
        .unwrap();
        let order: Vec<&str> = resource.ranked_connections().iter().map(|c| c.uri.as_str()).collect();
        assert_eq!(
            order,
            [
                "https://192-168-1-10.abc.plex.direct:32400",
                "http://192.168.1.10:32400",
                "https://1-2-3-4.abc.plex.direct:32400"
            ]
        );
    }

    #[test]
    fn owned_servers_first_players_left_out() {
        let list: Vec<Resource> = serde_json::from_value(serde_json::json!([
            {"name": "friend", "provides": "server", "owned": false},
            {"name": "tv", "provides": "client,player", "owned": true},
            {"name": "mine", "provides": "server,player", "owned": true}
        ]))
        .unwrap();
        let names: Vec<_> = servers(list).into_iter().filter_map(|s| s.name).collect();
        assert_eq!(names, ["mine", "friend"]);
    }
}
