//! The command line and configuration as a user meets them: every invalid configuration exits with 78 and one
//! message naming the key; `--print-config` shows the effective configuration with secrets masked.

use std::path::Path;
use std::process::{Command, Output};

const TOKEN: &str = "plex-token-Zq81xX";
const PASSWORD: &str = "mqtt-pass-Vv93kK";

fn run(config: Option<&str>, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_plex-mqtt-bridge"));
    for (name, _) in std::env::vars() {
        if name.starts_with("PLEX_MQTT_BRIDGE_") {
            command.env_remove(name);
        }
    }
    if let Some(config) = config {
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config).expect("write config");
        command.arg("--config").arg(&path);
    }
    command.args(args).envs(envs.iter().copied());
    command.output().expect("run the bridge")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Asserts exit code 78 and a single-line message that names `key`.
fn assert_config_error(output: &Output, key: &str) {
    let message = stderr(output);
    assert_eq!(output.status.code(), Some(78), "expected EX_CONFIG, got {:?}: {message}", output.status);
    assert!(message.contains(&format!("`{key}`")), "message should name `{key}`: {message}");
    assert!(message.contains("invalid configuration"), "{message}");
    assert!(!message.contains(TOKEN) && !message.contains(PASSWORD), "a secret leaked: {message}");
}

fn server(extra: &str) -> String {
    format!("[[servers]]\nurl = \"http://127.0.0.1:32400\"\ntoken = \"{TOKEN}\"\n{extra}\n")
}

#[test]
fn missing_token_names_the_key() {
    let output = run(Some("[[servers]]\nurl = \"http://127.0.0.1:32400\"\n"), &["--print-config"], &[]);
    assert_config_error(&output, "servers[0].token");
}

#[test]
fn unparseable_urls_name_the_key() {
    let output = run(Some(&format!("[[servers]]\nurl = \"not a url\"\ntoken = \"{TOKEN}\"\n")), &[], &[]);
    assert_config_error(&output, "servers[0].url");
    let output = run(Some(&format!("[mqtt]\nurl = \"::nope\"\n{}", server(""))), &[], &[]);
    assert_config_error(&output, "mqtt.url");
}

#[test]
fn wildcards_and_nul_in_prefix_or_name_are_rejected() {
    for prefix in ["plex/+", "plex/#", "a\\u0000b"] {
        let output = run(Some(&format!("[mqtt]\ntopic_prefix = \"{prefix}\"\n{}", server(""))), &[], &[]);
        assert_config_error(&output, "mqtt.topic_prefix");
    }
    for name in ["living+room", "#", "a/b", "x\\u0000"] {
        let output = run(Some(&server(&format!("name = \"{name}\""))), &[], &[]);
        assert_config_error(&output, "servers[0].name");
    }
}

#[test]
fn duplicate_server_names_are_rejected() {
    let config = format!("{}{}", server("name = \"nas\""), server("name = \"nas\""));
    assert_config_error(&run(Some(&config), &[], &[]), "servers[1].name");
}

#[test]
fn unknown_keys_are_rejected_wherever_they_are() {
    assert_config_error(&run(Some(&format!("[mqtt]\nurll = \"x\"\n{}", server(""))), &[], &[]), "mqtt.urll");
    assert_config_error(&run(Some(&server("tokne = \"x\"")), &[], &[]), "servers[0].tokne");
    assert_config_error(&run(Some(&format!("bogus = 1\n{}", server(""))), &[], &[]), "bogus");
    let output = run(Some(&server("")), &[], &[("PLEX_MQTT_BRIDGE_MQTT__URLL", "x")]);
    assert_config_error(&output, "PLEX_MQTT_BRIDGE_MQTT__URLL");
}

#[test]
fn other_invalid_values_name_their_key() {
    assert_config_error(&run(Some(&format!("[mqtt]\nqos = 3\n{}", server(""))), &[], &[]), "mqtt.qos");
    for inflight in ["0", "70000"] {
        let config = format!("[mqtt]\nmax_inflight = {inflight}\n{}", server(""));
        assert_config_error(&run(Some(&config), &[], &[]), "mqtt.max_inflight");
    }
    assert_config_error(
        &run(Some(&format!("[logging]\nformat = \"xml\"\n{}", server(""))), &[], &[]),
        "logging.format",
    );
    assert_config_error(
        &run(Some(&format!("[plex]\nping_interval = \"10s\"\nidle_timeout = \"5s\"\n{}", server(""))), &[], &[]),
        "plex.idle_timeout",
    );
    assert_config_error(&run(Some(&server("transport = \"carrier-pigeon\"")), &[], &[]), "servers[0].transport");
    let commands = format!("[commands]\nenabled = true\nallow = [\"pause\", \"reboot\"]\n{}", server(""));
    let output = run(Some(&commands), &[], &[]);
    assert_config_error(&output, "commands.allow");
    assert!(stderr(&output).contains("library_scan"), "the fix lists the verbs: {}", stderr(&output));
    assert_config_error(
        &run(Some(&format!("[commands]\nrate_limit = 0\n{}", server(""))), &[], &[]),
        "commands.rate_limit",
    );
    assert_config_error(&run(None, &[], &[]), "servers");
    let missing = Path::new("/nonexistent/token");
    let output =
        run(Some(&format!("[[servers]]\nurl = \"http://h:1\"\ntoken_file = \"{}\"\n", missing.display())), &[], &[]);
    assert_config_error(&output, "servers[0].token_file");
}

#[test]
fn print_config_masks_secrets_and_layers_sources() {
    let config =
        format!("[mqtt]\nurl = \"mqtt://bridge:{PASSWORD}@127.0.0.1:1883\"\ntopic_prefix = \"file\"\n{}", server(""));
    let output = run(
        Some(&config),
        &["--print-config", "--log-level", "debug"],
        &[("PLEX_MQTT_BRIDGE_MQTT_TOPIC_PREFIX", "env")],
    );
    let printed = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(!printed.contains(TOKEN) && !printed.contains(PASSWORD), "secret printed: {printed}");
    assert!(printed.contains("password = \"***\"") && printed.contains("token = \"***\""), "{printed}");
    assert!(printed.contains("topic_prefix = \"env\""), "environment overrides the file: {printed}");
    assert!(printed.contains("level = \"debug\""), "flags override everything: {printed}");
    assert!(printed.contains("url = \"mqtt://127.0.0.1:1883\""), "credentials removed from the URL: {printed}");
    let flag = run(
        Some(&config),
        &["--print-config", "--topic-prefix", "flag"],
        &[("PLEX_MQTT_BRIDGE_MQTT__TOPIC_PREFIX", "env")],
    );
    assert!(stdout(&flag).contains("topic_prefix = \"flag\""), "{}", stdout(&flag));
}

#[test]
fn a_single_server_can_come_entirely_from_the_environment() {
    let output = run(
        None,
        &["--print-config"],
        &[
            ("PLEX_MQTT_BRIDGE_PLEX_URL", "http://192.168.1.10:32400"),
            ("PLEX_MQTT_BRIDGE_PLEX_TOKEN", "0123"),
            ("PLEX_MQTT_BRIDGE_PLEX_FILTERS", "-log,playing"),
            ("PLEX_MQTT_BRIDGE_PLEX_NAME", "nas"),
        ],
    );
    let printed = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(printed.contains("url = \"http://192.168.1.10:32400/\""), "{printed}");
    let parsed: toml::Table = printed.parse().unwrap_or_else(|e| panic!("the printed config is TOML ({e}): {printed}"));
    let servers = parsed.get("servers").and_then(toml::Value::as_array).unwrap_or_else(|| panic!("{printed}"));
    assert_eq!(servers.len(), 1, "{printed}");
    let filters = servers[0].get("filters").and_then(toml::Value::as_array).unwrap_or_else(|| panic!("{printed}"));
    let filters: Vec<&str> = filters.iter().map(|f| f.as_str().unwrap_or_else(|| panic!("{printed}"))).collect();
    assert_eq!(filters, ["-log", "playing"], "{printed}");
    assert!(printed.contains("name = \"nas\""), "{printed}");
    assert!(!printed.contains("0123"), "a numeric token is still a secret: {printed}");
}

#[test]
fn client_identifier_is_stable_across_runs_and_configurable() {
    let first = stdout(&run(Some(&server("")), &["--print-config"], &[]));
    let second = stdout(&run(Some(&server("")), &["--print-config"], &[]));
    let id = |text: &str| text.lines().find(|l| l.starts_with("client_identifier")).map(str::to_owned);
    assert!(id(&first).is_some(), "{first}");
    assert_eq!(id(&first), id(&second));
    let custom =
        stdout(&run(Some(&format!("[plex]\nclient_identifier = \"my-id\"\n{}", server(""))), &["--print-config"], &[]));
    assert_eq!(id(&custom).as_deref(), Some("client_identifier = \"my-id\""));
}

#[test]
fn a_malformed_value_is_not_echoed_in_the_error() {
    // Unparseable as a list, the variable arrives as one string, token and all.
    let servers = format!("[{{url=\"http://10.0.0.1:32400\",token=\"{TOKEN}\"");
    let output = run(None, &["--print-config"], &[("PLEX_MQTT_BRIDGE_SERVERS", &servers)]);
    assert_config_error(&output, "PLEX_MQTT_BRIDGE_SERVERS");
    let url = format!("mqtt://bridge:{PASSWORD}@[::1");
    let output = run(Some(&format!("[mqtt]\nurl = \"{url}\"\n{}", server(""))), &["--print-config"], &[]);
    assert_config_error(&output, "mqtt.url");
}

#[test]
fn a_plextv_url_with_credentials_a_query_or_a_fragment_is_refused() {
    for url in [
        format!("https://bridge:{PASSWORD}@clients.plex.tv"),
        format!("https://clients.plex.tv/?X-Plex-Token={TOKEN}"),
        format!("https://clients.plex.tv/#{TOKEN}"),
    ] {
        let output = run(Some(&format!("[plex]\nplextv_url = \"{url}\"\n{}", server(""))), &["--print-config"], &[]);
        assert_config_error(&output, "plex.plextv_url");
        let login = run(None, &["login", "--plextv-url", &url, "--token-file", "/nonexistent/plex_token"], &[]);
        assert_config_error(&login, "--plextv-url");
    }
    let proxied = run(
        Some(&format!("[plex]\nplextv_url = \"https://proxy.lan/plextv\"\n{}", server(""))),
        &["--print-config"],
        &[],
    );
    assert_eq!(proxied.status.code(), Some(0), "a path is a proxy's prefix: {}", stderr(&proxied));
}
