//! Running out of file descriptors (issue 29) is named as such, with the fix: the real bridge started with a hard
//! limit it cannot raise and more servers than fit under it hits a real EMFILE, and says so — not "cannot read
//! the token file … Too many open files" — while the servers that fit stay connected.

mod support;

use std::time::Duration;

use support::config::Server;
use support::fake_pms::CannedResponse;
use support::wait::{self, SOON};
use support::{test_config, Bridge, FakePms, Mosquitto, TokenFile};

/// Servers configured.
const SERVERS: usize = 16;
/// The bridge's file-descriptor limit, soft and hard: room for its own needs and a few servers, not for all.
const LIMIT: u64 = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_is_named_with_the_fix() {
    let broker = Mosquitto::start();
    let mut servers = Vec::new();
    for _ in 0..SERVERS {
        let pms = FakePms::start_default().await;
        pms.set_canned("/status/sessions", CannedResponse::json(r#"{"MediaContainer":{"size":0}}"#));
        pms.set_canned("/activities", CannedResponse::json(r#"{"MediaContainer":{"size":0}}"#));
        servers.push(pms);
    }
    let token = TokenFile::new(&servers[0].token());
    let mut config = test_config(&broker.url(), &servers[0].url(), token.path()).server_name(Some("pms-0"));
    for (i, pms) in servers.iter().enumerate().skip(1) {
        config = config.add_server(Server::new(&pms.url(), token.path(), &format!("pms-{i}")));
    }
    let bridge = Bridge::start_with_fd_limit(&config, LIMIT);

    // At start: the limit could not be raised, and the bridge says how many servers fit.
    assert!(
        bridge.wait_for_log("leaves room for fewer Plex servers than are configured", SOON).await,
        "{}",
        bridge.logs()
    );
    // Then the servers that do not fit run into it, and the log names it with the fix.
    assert!(bridge.wait_for_log("out of file descriptors (EMFILE", SOON).await, "{}", bridge.logs());
    let logs = bridge.logs();
    let named = logs.lines().find(|l| l.contains("(EMFILE")).unwrap_or_default();
    assert!(named.contains("LimitNOFILE="), "the fix is given: {named}");
    assert!(!logs.contains("Too many open files"), "never the bare OS text:\n{logs}");

    // Those that fit are served all the same.
    let connected = wait::poll(SOON, async || servers.iter().any(|pms| pms.ws_connection_count() == 1).then_some(()));
    assert!(connected.await.is_some(), "no server connected under the limit:\n{}", bridge.logs());
    wait::observe(Duration::from_millis(500)).await;
    let mut bridge = bridge;
    assert!(bridge.is_running(), "the bridge keeps running:\n{}", bridge.logs());
}
