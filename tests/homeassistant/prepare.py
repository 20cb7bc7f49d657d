"""Prepares Home Assistant for the integration tests: what to install, and a configuration with no UI step.

    prepare.py requirements     # at install time: the packages the integrations it sets up need, one a line
    prepare.py check            # at install time: each of those integrations imports (fails with the errors)
    prepare.py CONFIG_DIR HTTP_PORT MQTT_PORT HA_VERSION

Requirements are found the way Home Assistant finds them when it installs them itself (it cannot here: the tests
run it with --skip-pip): the manifests of the integrations it sets up (its default ones, and those of the
configuration below), their dependencies and after_dependencies, and the discovery integrations their
manifests name. The wheel's own dependencies do not cover them all (from 2026 on, e.g. the Supervisor client
the MQTT config flow imports).

The configuration directory:

- configuration.yaml: HTTP on 127.0.0.1:HTTP_PORT, the REST API, automations from automations.yaml, the
  packages in packages/ (a test may put some there before the start), an input_text and a counter the test
  automations write to, and `logger` at warning so every warning shows in home-assistant.log;
- .storage/core.config_entries: the MQTT integration against 127.0.0.1:MQTT_PORT with discovery on;
- .storage/auth: one owner with a long-lived access token, and .storage/onboarding marked done.

Prints the access token (an HS256 JWT signed with the refresh token's key, exactly as Home Assistant issues
them) on stdout. Runs with the virtualenv's Python, which has PyJWT (a Home Assistant dependency).
"""

import datetime
import importlib
import json
import os
import secrets
import sys
import uuid

import jwt

# The integrations configuration.yaml and the config entries below set up.
CONFIGURED = ("homeassistant", "http", "api", "automation", "input_text", "counter", "logger", "mqtt")
# The integrations of the packages tests add (the media player package: template sensors, universal media players).
IN_PACKAGES = ("template", "media_player", "universal")
# Integrations whose code ones Home Assistant sets up import without naming them in their manifests (camera
# imports stream's, which needs stream's requirements: numpy, no longer a Home Assistant dependency in 2026).
UNDECLARED = ("stream",)


def integrations():
    """The integrations Home Assistant sets up for this configuration, with everything it installs for them."""
    import homeassistant
    from homeassistant import bootstrap, requirements

    components = os.path.join(os.path.dirname(homeassistant.__file__), "components")
    discovery = getattr(requirements, "DISCOVERY_INTEGRATIONS", {})
    todo = [*bootstrap.CORE_INTEGRATIONS, *bootstrap.DEFAULT_INTEGRATIONS, *CONFIGURED, *IN_PACKAGES, *UNDECLARED]
    found = {}
    while todo:
        domain = todo.pop()
        path = os.path.join(components, domain, "manifest.json")
        if domain in found or not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            manifest = found[domain] = json.load(f)
        todo += manifest.get("dependencies", []) + manifest.get("after_dependencies", [])
        todo += [dep for dep, keys in discovery.items() if any(key in manifest for key in keys)]
    return found


def print_requirements():
    wanted = {req for manifest in integrations().values() for req in manifest.get("requirements", [])}
    print("\n".join(sorted(wanted)))


def check():
    failed = []
    for domain in sorted(integrations()):
        try:
            importlib.import_module(f"homeassistant.components.{domain}")
        except Exception as error:  # noqa: BLE001 - every failure is reported
            failed.append(f"{domain}: {error!r}")
    if failed:
        sys.exit("integrations that do not import:\n" + "\n".join(failed))


def store(directory, key, data, version=1, minor_version=1):
    path = os.path.join(directory, ".storage", key)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"version": version, "minor_version": minor_version, "key": key, "data": data}, f, indent=1)


def main():
    if sys.argv[1:] == ["requirements"]:
        return print_requirements()
    if sys.argv[1:] == ["check"]:
        return check()
    config_dir, http_port, mqtt_port, ha_version = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    os.makedirs(os.path.join(config_dir, ".storage"), exist_ok=True)
    os.makedirs(os.path.join(config_dir, "packages"), exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc).isoformat()

    with open(os.path.join(config_dir, "configuration.yaml"), "w", encoding="utf-8") as f:
        f.write(
            "homeassistant:\n"
            "  name: Test home\n"
            "  latitude: 52.37\n"
            "  longitude: 4.89\n"
            "  elevation: 0\n"
            "  unit_system: metric\n"
            "  time_zone: UTC\n"
            "  country: NL\n"
            "  currency: EUR\n"
            "  packages: !include_dir_named packages\n"
            "http:\n"
            "  server_host: 127.0.0.1\n"
            f"  server_port: {http_port}\n"
            "api:\n"
            "automation: !include automations.yaml\n"
            "input_text:\n"
            "  last_trigger:\n"
            "    name: Last trigger\n"
            "    max: 255\n"
            "counter:\n"
            "  event_automation_runs:\n"
            "    name: Event automation runs\n"
            "logger:\n"
            "  default: warning\n"
        )
    automations = os.path.join(config_dir, "automations.yaml")
    if not os.path.exists(automations):
        with open(automations, "w", encoding="utf-8") as f:
            f.write("[]\n")

    entry = {
        "entry_id": uuid.uuid4().hex,
        "version": 1,
        "minor_version": 2,
        "domain": "mqtt",
        "title": "127.0.0.1",
        "data": {"broker": "127.0.0.1", "port": mqtt_port},
        "options": {"discovery": True, "discovery_prefix": "homeassistant"},
        "pref_disable_new_entities": False,
        "pref_disable_polling": False,
        "source": "user",
        "unique_id": None,
        "disabled_by": None,
        "created_at": now,
        "modified_at": now,
        "discovery_keys": {},
        "subentries": [],
    }
    store(config_dir, "core.config_entries", {"entries": [entry]}, minor_version=5)

    user_id, token_id, jwt_key = uuid.uuid4().hex, uuid.uuid4().hex, secrets.token_hex(64)
    auth = {
        "users": [
            {
                "id": user_id,
                "group_ids": ["system-admin"],
                "is_owner": True,
                "is_active": True,
                "name": "test",
                "system_generated": False,
                "local_only": False,
            }
        ],
        "groups": [
            {"id": "system-admin", "name": "Administrators"},
            {"id": "system-users", "name": "Users"},
            {"id": "system-read-only", "name": "Read Only"},
        ],
        "credentials": [],
        "refresh_tokens": [
            {
                "id": token_id,
                "user_id": user_id,
                "client_id": None,
                "client_name": "plex-mqtt-bridge tests",
                "client_icon": None,
                "token_type": "long_lived_access_token",
                "created_at": now,
                "access_token_expiration": 86400.0 * 3650,
                "token": secrets.token_hex(64),
                "jwt_key": jwt_key,
                "last_used_at": None,
                "last_used_ip": None,
                "expire_at": None,
                "credential_id": None,
                "version": ha_version,
            }
        ],
    }
    store(config_dir, "auth", auth)
    store(config_dir, "onboarding", {"done": ["user", "core_config", "analytics", "integration"]}, version=4)

    issued = int(datetime.datetime.now(datetime.timezone.utc).timestamp()) - 60
    token = jwt.encode({"iss": token_id, "iat": issued, "exp": issued + 86400 * 3650}, jwt_key, algorithm="HS256")
    print(token)


if __name__ == "__main__":
    main()
