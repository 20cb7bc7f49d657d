//! Redirects and the token: a request that carries `X-Plex-Token` follows a redirect only to the origin (scheme,
//! host, port) it was sent to.
//!
//! reqwest's default policy follows up to ten redirects anywhere and strips only the standard credential headers
//! (`Authorization`, `Cookie`, …) when the origin changes; `X-Plex-Token` is a custom header, so it would travel
//! along to whatever host a `Location` names. Anything that can make the configured address answer `302` (a
//! reverse proxy, a captive portal, a device that took over the server's old DHCP lease) could then harvest the
//! owner's token. So the bridge follows same-origin redirects (a proxy that adds a slash, say), a few at most,
//! and refuses every other one with [`RedirectRefused`], which names the target origin (never its path or
//! query) so the log and `/healthz` say what happened. An `http` → `https` upgrade changes the origin too and is
//! refused as well: the fix is to configure the `https://` URL, which then gets certificate checks.

use reqwest::Url;

/// Same-origin redirects followed at most per request.
pub const MAX_REDIRECTS: usize = 5;

/// A redirect to another origin, not followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the server answered with a redirect to {target}, another origin than {origin}; the bridge does not follow it, \
     so the token is not sent there (point the server URL at Plex itself, or fix what is in front of it)"
)]
pub struct RedirectRefused {
    /// `scheme://host[:port]` the redirect pointed at.
    pub target: String,
    /// `scheme://host[:port]` the request was sent to.
    pub origin: String,
}

/// `scheme://host[:port]` of `url`, with `ws`/`wss` spelled `http`/`https` (a WebSocket upgrade is an HTTP
/// request to the same origin). User-info, path, query and fragment are left out, so the text is safe to log.
pub fn origin(url: &Url) -> String {
    let scheme = http_scheme(url.scheme());
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) if Some(port) != default_port(scheme) => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    }
}

/// Whether `a` and `b` have the same origin (scheme, host, port; `ws` counts as `http`, `wss` as `https`).
pub fn same_origin(a: &Url, b: &Url) -> bool {
    let (scheme_a, scheme_b) = (http_scheme(a.scheme()), http_scheme(b.scheme()));
    scheme_a == scheme_b
        && a.host() == b.host()
        && a.port().or(default_port(scheme_a)) == b.port().or(default_port(scheme_b))
}

/// Where a redirect from `from` to `location` leads, if the bridge may follow it: the `Location` resolved
/// against `from`, in `from`'s scheme (`ws://` stays `ws://`). Another origin is [`RedirectRefused`].
pub fn next_hop(from: &Url, location: &str) -> Result<Url, RedirectRefused> {
    let refused = |target: String| RedirectRefused { target, origin: origin(from) };
    let mut next = from.join(location.trim()).map_err(|_| refused("an address that is not a URL".into()))?;
    if !same_origin(from, &next) {
        return Err(refused(origin(&next)));
    }
    // Same origin, so only the spelling of the scheme can differ (`http` in a `Location` for a `ws://` request).
    if next.scheme() != from.scheme() && next.set_scheme(from.scheme()).is_err() {
        return Err(refused(origin(&next)));
    }
    Ok(next)
}

/// The policy of every HTTP client that talks to PMS: same-origin redirects only, [`MAX_REDIRECTS`] at most.
/// The first entry of `previous` is the URL the request was sent to, so the rule holds for the whole chain.
pub fn policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let Some(first) = attempt.previous().first().cloned() else {
            return attempt.stop();
        };
        if !same_origin(&first, attempt.url()) {
            let refused = RedirectRefused { target: origin(attempt.url()), origin: origin(&first) };
            return attempt.error(refused);
        }
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(TooManyRedirects);
        }
        attempt.follow()
    })
}

/// More than [`MAX_REDIRECTS`] same-origin redirects in one chain (a loop in a proxy's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("more than {MAX_REDIRECTS} redirects; check what is in front of the server")]
pub struct TooManyRedirects;

fn http_scheme(scheme: &str) -> &str {
    match scheme {
        "ws" => "http",
        "wss" => "https",
        other => other,
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        assert!(same_origin(&url("http://pms:32400/"), &url("http://pms:32400/web?x=1")));
        assert!(same_origin(&url("ws://pms:32400/:/websockets/notifications"), &url("http://pms:32400/other")));
        assert!(same_origin(&url("https://pms/"), &url("https://pms:443/")));
        assert!(!same_origin(&url("http://pms:32400/"), &url("http://pms:32401/")));
        assert!(!same_origin(&url("http://pms:32400/"), &url("http://evil:32400/")));
        assert!(!same_origin(&url("http://pms:32400/"), &url("https://pms:32400/")));
        assert!(!same_origin(&url("ws://pms:32400/"), &url("https://pms:32400/")));
    }

    #[test]
    fn next_hop_keeps_the_scheme_and_refuses_other_origins() {
        let from = url("ws://127.0.0.1:32400/:/websockets/notifications?filters=-log");
        let next = next_hop(&from, "/:/websocket/notifications").unwrap();
        assert_eq!(next.as_str(), "ws://127.0.0.1:32400/:/websocket/notifications");
        let next = next_hop(&from, "http://127.0.0.1:32400/x").unwrap();
        assert_eq!(next.as_str(), "ws://127.0.0.1:32400/x");
        let refused = next_hop(&from, "http://user:pw@127.0.0.2:9000/steal?t=1").unwrap_err();
        assert_eq!(refused.target, "http://127.0.0.2:9000");
        assert_eq!(refused.origin, "http://127.0.0.1:32400");
        assert!(!refused.to_string().contains("steal") && !refused.to_string().contains("pw"));
    }
}
