"""Writes a Home Assistant configuration directory for the integration tests, with no UI step.

    prepare.py CONFIG_DIR HTTP_PORT MQTT_PORT

- configuration.yaml: HTTP on 127.0.0.1:HTTP_PORT, the REST API, automations from automations.yaml and an
  input_text and a counter the test automations write to, and `logger` at warning so every warning shows in home-assistant.log;
- .storage/core.config_entries: the MQTT integration against 127.0.0.1:MQTT_PORT with discovery on;
- .storage/auth: one owner with a long-lived access token, and .storage/onboarding marked done.

Prints the access token (an HS256 JWT signed with the refresh token's key, exactly as Home Assistant issues
them) on stdout. Runs with the virtualenv's Python, which has PyJWT (a Home Assistant dependency).
"""

import datetime
import json
import os
import secrets
import sys
import uuid

import jwt


def store(directory, key, data, version=1, minor_version=1):
    path = os.path.join(directory, ".storage", key)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"version": version, "minor_version": minor_version, "key": key, "data": data}, f, indent=1)


def main():
    config_dir, http_port, mqtt_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    os.makedirs(os.path.join(config_dir, ".storage"), exist_ok=True)
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
                "version": "2025.4.4",
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
