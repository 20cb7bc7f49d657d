//! Merging nested figment dictionaries, as the sources that write dotted keys (the environment, the add-on's
//! options) need.

use figment::value::{Dict, Value};

pub(super) fn merge_dicts(mut into: Dict, from: Dict) -> Dict {
    for (key, value) in from {
        let merged = match (into.remove(&key), value) {
            (Some(Value::Dict(_, a)), Value::Dict(tag, b)) => Value::Dict(tag, merge_dicts(a, b)),
            (_, value) => value,
        };
        into.insert(key, merged);
    }
    into
}
