//! The usual test set-up in one place: a broker, a fake PMS, a token file, a probe on `plex/#` and the bridge.

use super::fake_pms::FakePmsConfig;
use super::wait::SOON;
use super::{test_config, Bridge, BridgeConfig, FakePms, Mosquitto, Probe, TokenFile};

/// Everything a bridge test runs against, stopped on drop.
pub struct Fixture {
    pub broker: Mosquitto,
    pub pms: FakePms,
    pub token: TokenFile,
    pub probe: Probe,
    pub bridge: Bridge,
}

impl Fixture {
    /// Starts everything with the bridge's config `edit(test_config(…))`; `setup` prepares the fake PMS before the
    /// bridge starts. Does not wait for the bridge to connect.
    pub async fn launch_with(
        pms: FakePmsConfig,
        setup: impl FnOnce(&FakePms),
        edit: impl FnOnce(BridgeConfig) -> BridgeConfig,
    ) -> Fixture {
        let broker = Mosquitto::start();
        let pms = FakePms::start(pms).await;
        setup(&pms);
        let token = TokenFile::new(&pms.token());
        let probe = Probe::subscribe(broker.port(), &["plex/#"]).await;
        let bridge = Bridge::start(&edit(test_config(&broker.url(), &pms.url(), token.path())));
        Fixture { broker, pms, token, probe, bridge }
    }

    /// [`Fixture::launch_with`] without PMS set-up.
    pub async fn launch(pms: FakePmsConfig, edit: impl FnOnce(BridgeConfig) -> BridgeConfig) -> Fixture {
        Self::launch_with(pms, |_| {}, edit).await
    }

    /// [`Fixture::launch_with`], then waits until the server named `test` is connected.
    pub async fn connected_with(
        pms: FakePmsConfig,
        setup: impl FnOnce(&FakePms),
        edit: impl FnOnce(BridgeConfig) -> BridgeConfig,
    ) -> Fixture {
        let mut fixture = Self::launch_with(pms, setup, edit).await;
        fixture.probe.expect_payload("plex/test/state", "connected", SOON).await;
        fixture
    }
}
