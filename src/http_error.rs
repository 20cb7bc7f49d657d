//! A readable sentence for a failed HTTP request: what kind of failure (timed out, could not connect, other) and
//! every cause down the chain (reqwest's own text names only the outermost, e.g. "error sending request"). The
//! URL in it never holds a token: tokens travel in headers only.

/// How the sentence of a connection that could not be opened begins.
pub const CONNECT_FAILED: &str = "connection failed";

/// `"<kind>: <error>: <cause>: …"`.
pub fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        CONNECT_FAILED
    } else {
        "request failed"
    };
    let mut text = format!("{kind}: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
