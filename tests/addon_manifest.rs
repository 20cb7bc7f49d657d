//! The Home Assistant add-on repository (`repository.yaml`, `plex-mqtt-bridge/`) against the add-on schema in
//! Home Assistant's developer docs ("App configuration", "Create an app repository"; the keys, the architecture
//! list and the option types as of the Supervisor 2026 docs), and against the bridge's own mapping of the options
//! (`config::ADDON_OPTIONS`). No maintained validator of add-on manifests is published on a package registry (the
//! Supervisor validates them with its own code at install time), so the documented rules are checked here.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use plex_mqtt_bridge::command_verb::Verb;
use plex_mqtt_bridge::config::{ADDON_ONLY_OPTIONS, ADDON_OPTIONS};
use support::Bridge;
use yaml_rust2::{Yaml, YamlLoader};

const ADDON_DIR: &str = "plex-mqtt-bridge";

/// Every key the docs list for `config.yaml`, required and optional.
const KNOWN_KEYS: [&str; 63] = [
    "name",
    "version",
    "slug",
    "description",
    "arch",
    "machine",
    "url",
    "startup",
    "webui",
    "boot",
    "ports",
    "ports_description",
    "host_network",
    "host_ipc",
    "host_dbus",
    "host_pid",
    "host_uts",
    "devices",
    "homeassistant",
    "hassio_role",
    "hassio_api",
    "homeassistant_api",
    "docker_api",
    "privileged",
    "full_access",
    "apparmor",
    "map",
    "environment",
    "audio",
    "video",
    "gpio",
    "usb",
    "uart",
    "udev",
    "devicetree",
    "kernel_modules",
    "stdin",
    "legacy",
    "options",
    "schema",
    "image",
    "timeout",
    "tmpfs",
    "discovery",
    "services",
    "auth_api",
    "ingress",
    "ingress_port",
    "ingress_entry",
    "ingress_stream",
    "panel_icon",
    "panel_title",
    "panel_admin",
    "backup",
    "backup_pre",
    "backup_post",
    "backup_exclude",
    "stage",
    "init",
    "watchdog",
    "realtime",
    "journald",
    "breaking_versions",
];
/// The supported architectures (`armhf`, `armv7` and `i386` are deprecated).
const ARCHES: [&str; 2] = ["aarch64", "amd64"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn load(path: &Path) -> Yaml {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    assert_eq!(docs.len(), 1, "{} must hold one YAML document", path.display());
    docs.remove(0)
}

fn keys(yaml: &Yaml) -> Vec<String> {
    yaml.as_hash().map(|h| h.keys().filter_map(|k| k.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

fn manifest() -> Yaml {
    load(&root().join(ADDON_DIR).join("config.yaml"))
}

#[test]
fn the_repository_has_its_file_and_one_add_on() {
    let repository = load(&root().join("repository.yaml"));
    assert!(repository["name"].as_str().is_some_and(|n| !n.trim().is_empty()), "repository.yaml needs a name");
    for key in keys(&repository) {
        assert!(["name", "url", "maintainer"].contains(&key.as_str()), "repository.yaml: unknown key {key}");
    }
    // The Supervisor takes every config.{json,yml,yaml} outside hidden folders and `rootfs` for an add-on.
    let mut manifests = Vec::new();
    find_manifests(&root(), &mut manifests);
    assert_eq!(manifests, [root().join(ADDON_DIR).join("config.yaml")], "the Supervisor would load these as add-ons");
    for file in ["DOCS.md", "README.md", "CHANGELOG.md", "Dockerfile", "translations/en.yaml"] {
        assert!(root().join(ADDON_DIR).join(file).is_file(), "{ADDON_DIR}/{file} is missing");
    }
}

fn find_manifests(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with('.') || name == "rootfs" || name == "target" {
            continue;
        }
        if path.is_dir() {
            find_manifests(&path, found);
        } else if ["config.json", "config.yml", "config.yaml"].contains(&name.as_str()) {
            found.push(path);
        }
    }
}

#[test]
fn the_manifest_has_the_documented_keys_and_values() {
    let config = manifest();
    for key in keys(&config) {
        assert!(KNOWN_KEYS.contains(&key.as_str()), "config.yaml: {key} is not a documented key");
    }
    for key in ["name", "version", "slug", "description"] {
        assert!(config[key].as_str().is_some_and(|v| !v.trim().is_empty()), "config.yaml: {key} must be a string");
    }
    assert_eq!(config["version"].as_str(), Some(env!("CARGO_PKG_VERSION")), "the add-on ships this crate's version");
    let slug = config["slug"].as_str().unwrap_or_default();
    assert!(slug.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)), "slug {slug:?} is not URI friendly");
    let arch = config["arch"].as_vec().expect("arch must be a list");
    assert!(!arch.is_empty(), "arch is empty");
    for a in arch {
        assert!(a.as_str().is_some_and(|a| ARCHES.contains(&a)), "arch {a:?} is not one of {ARCHES:?}");
    }
    let one_of = |key: &str, allowed: &[&str]| {
        if !config[key].is_badvalue() {
            assert!(config[key].as_str().is_some_and(|v| allowed.contains(&v)), "{key} is not one of {allowed:?}");
        }
    };
    one_of("startup", &["initialize", "system", "services", "application", "once"]);
    one_of("boot", &["auto", "manual", "manual_only"]);
    one_of("stage", &["stable", "experimental", "deprecated"]);
    let services: Vec<_> = config["services"].as_vec().expect("services").iter().filter_map(Yaml::as_str).collect();
    for service in &services {
        let valid = service.split_once(':').is_some_and(|(name, role)| {
            ["mqtt", "mysql"].contains(&name) && ["provide", "want", "need"].contains(&role)
        });
        assert!(valid, "service {service:?} is not SERVICE:provide|want|need");
    }
    assert!(services.contains(&"mqtt:need"), "the bridge needs the MQTT service");
}

#[test]
fn every_option_has_a_valid_schema_and_a_default_that_fits_it() {
    let config = manifest();
    let schema = config["schema"].as_hash().expect("schema must be a map");
    let options = config["options"].as_hash().expect("options must be a map");
    for (option, value) in options {
        let option = option.as_str().expect("option names are strings");
        let element = &config["schema"][option];
        assert!(!element.is_badvalue(), "option {option} has no schema entry");
        assert!(fits(value, element), "option {option}: its default {value:?} does not fit {element:?}");
    }
    for (option, element) in schema {
        let option = option.as_str().expect("schema keys are strings");
        let elements = match element {
            Yaml::Array(list) => {
                assert_eq!(list.len(), 1, "{option}: a list schema has one element");
                list.clone()
            }
            other => vec![other.clone()],
        };
        for element in elements {
            let text = element.as_str().unwrap_or_else(|| panic!("{option}: schema {element:?} is not a type"));
            assert!(schema_type(text).is_some(), "{option}: {text:?} is not a documented type");
        }
        let optional = element.as_str().is_some_and(|t| t.ends_with('?'));
        assert!(!(optional && options.contains_key(&Yaml::String(option.into()))), "{option}: optional with a default");
    }
}

/// The documented types: `str`, `bool`, `int`, `float` (the numeric ones and `str`/`password` with an optional
/// `(min,max)`), `email`, `url`, `password`, `port`, `match(REGEX)`, `list(a|b|…)`, `device` / `device(filter)`;
/// `?` makes one optional. Returns the base name.
fn schema_type(text: &str) -> Option<&str> {
    let text = text.strip_suffix('?').unwrap_or(text);
    let (base, argument) = match text.split_once('(') {
        Some((base, rest)) => (base, Some(rest.strip_suffix(')')?)),
        None => (text, None),
    };
    let valid = match (base, argument) {
        ("bool" | "email" | "url" | "port" | "device" | "str" | "password" | "int" | "float", None) => true,
        ("match", Some(regex)) => !regex.is_empty(),
        ("list", Some(choices)) => choices.split('|').all(|c| !c.is_empty()),
        ("device", Some(filter)) => filter
            .strip_prefix("subsystem=")
            .is_some_and(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase())),
        ("str" | "password" | "int" | "float", Some(range)) => range
            .split_once(',')
            .is_some_and(|(min, max)| [min, max].iter().all(|n| n.is_empty() || n.parse::<f64>().is_ok())),
        _ => false,
    };
    valid.then_some(base)
}

/// Whether an option's default has the type its schema element asks for.
fn fits(value: &Yaml, element: &Yaml) -> bool {
    match (value, element) {
        (Yaml::Array(values), Yaml::Array(elements)) => {
            elements.len() == 1 && values.iter().all(|v| fits(v, &elements[0]))
        }
        (value, Yaml::String(text)) => {
            let bare = text.strip_suffix('?').unwrap_or(text);
            match (schema_type(text), value) {
                (Some("bool"), Yaml::Boolean(_)) => true,
                (Some("int" | "port"), Yaml::Integer(_)) => true,
                (Some("float"), Yaml::Real(_) | Yaml::Integer(_)) => true,
                (Some("list"), Yaml::String(v)) => choices(bare).contains(v.as_str()),
                (Some("str" | "password" | "email" | "match" | "device"), Yaml::String(_)) => true,
                (Some("url"), Yaml::String(v)) => url::Url::parse(v).is_ok(),
                _ => false,
            }
        }
        _ => false,
    }
}

fn choices(list_type: &str) -> BTreeSet<&str> {
    list_type
        .strip_prefix("list(")
        .and_then(|t| t.strip_suffix(')'))
        .map(|c| c.split('|').collect())
        .unwrap_or_default()
}

/// The options are exactly those the bridge maps, their choices the bridge's own, and each is translated.
#[test]
fn the_options_are_the_ones_the_bridge_maps() {
    let config = manifest();
    let offered: BTreeSet<String> = keys(&config["schema"]).into_iter().collect();
    let mapped: BTreeSet<String> =
        ADDON_OPTIONS.iter().map(|(o, _)| *o).chain(ADDON_ONLY_OPTIONS).map(str::to_owned).collect();
    assert_eq!(offered, mapped, "config.yaml's options and config::ADDON_OPTIONS differ");
    let verbs = choices(config["schema"]["commands_allow"][0].as_str().unwrap_or_default());
    let names = Verb::all_names();
    assert_eq!(verbs, names.split(", ").collect(), "commands_allow's choices are not the bridge's commands");
    for level in choices(config["schema"]["log_level"].as_str().unwrap_or_default()) {
        assert!(tracing_subscriber::EnvFilter::builder().parse(level).is_ok(), "log_level {level} is no level");
    }
    assert!(config["schema"]["server_url"].as_str() == Some("url"), "server_url is required and a URL");

    let translations = load(&root().join(ADDON_DIR).join("translations/en.yaml"));
    for key in keys(&translations) {
        assert!(["configuration", "network"].contains(&key.as_str()), "translations: unknown section {key}");
    }
    let translated: BTreeSet<String> = keys(&translations["configuration"]).into_iter().collect();
    assert_eq!(translated, offered, "translations/en.yaml must name and describe every option");
    for option in &translated {
        let entry = &translations["configuration"][option.as_str()];
        assert!(entry["name"].as_str().is_some_and(|n| !n.is_empty()), "translations: {option} has no name");
        assert!(entry["description"].as_str().is_some(), "translations: {option} has no description");
    }
    let docs = std::fs::read_to_string(root().join(ADDON_DIR).join("DOCS.md")).expect("DOCS.md");
    for option in &offered {
        assert!(docs.contains(&format!("`{option}`")), "DOCS.md does not describe {option}");
    }
}

/// The image starts the bridge in add-on mode, from the bridge's image of the same version.
#[test]
fn the_dockerfile_runs_the_same_version_in_add_on_mode() {
    let dockerfile = std::fs::read_to_string(root().join(ADDON_DIR).join("Dockerfile")).expect("Dockerfile");
    let version = env!("CARGO_PKG_VERSION");
    assert!(dockerfile.contains(&format!("plex-mqtt-bridge:{version}\n")), "BRIDGE_IMAGE is not version {version}");
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/plex-mqtt-bridge\", \"--addon\"]"));
    assert!(dockerfile.contains("io.hass.type="), "the io.hass labels are missing");
}

/// The defaults of `config.yaml`, as the Supervisor writes them to `options.json` once the user filled in the
/// required `server_url`, are a configuration the bridge accepts.
#[test]
fn the_default_options_are_a_valid_configuration() {
    let config = manifest();
    let mut options = json(&config["options"]);
    options["server_url"] = "http://192.168.1.10:32400".into();
    // Stands in for the Supervisor's broker, which this test has none of.
    options["mqtt_url"] = "mqtt://127.0.0.1:1883".into();
    let data = tempfile::tempdir().expect("tempdir");
    std::fs::write(data.path().join("options.json"), options.to_string()).expect("write options.json");
    std::fs::write(data.path().join("plex_token"), "plex-token").expect("write the token file");
    let arg = format!("--addon={}", data.path().join("options.json").display());
    let (code, output) = Bridge::run_to_exit_blocking(&[&arg, "--print-config"], &[], None, Duration::from_secs(20));
    assert_eq!(code, Some(0), "{output}");
}

/// A YAML value as the JSON the Supervisor writes.
fn json(yaml: &Yaml) -> serde_json::Value {
    match yaml {
        Yaml::Hash(map) => map.iter().filter_map(|(k, v)| Some((k.as_str()?.to_owned(), json(v)))).collect(),
        Yaml::Array(list) => list.iter().map(json).collect(),
        Yaml::String(text) => text.clone().into(),
        Yaml::Boolean(flag) => (*flag).into(),
        Yaml::Integer(number) => (*number).into(),
        Yaml::Real(text) => text.parse::<f64>().map_or(serde_json::Value::Null, Into::into),
        _ => serde_json::Value::Null,
    }
}
