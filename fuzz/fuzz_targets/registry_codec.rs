//! The etcd key and value codec (`services/{scope}/{service}/{host}/{port}/{http|https}`
//! and quaestor's JSON value). Input: the key, a NUL byte, the value.
//!
//! Properties: nothing panics; a key that parses re-encodes to a key that parses to the
//! same location (not byte-equal: `0161` and `+161` are read as port 161); a location with
//! what its value adds survives encoding its key and value and decoding them again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quaestor_core::registry::{KEY_PREFIX, ServiceLocation, parse_entries, parse_entry};

fuzz_target!(|data: &[u8]| {
    let (key, value) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let entry = parse_entry(key, value);
    let Ok(text) = std::str::from_utf8(key) else {
        assert!(entry.is_none(), "a key that is not UTF-8 parsed");
        return;
    };
    let parsed = ServiceLocation::from_key(text);
    assert_eq!(parsed.is_ok(), entry.is_some());
    let Ok(location) = parsed else { return };

    let key = location.key();
    assert!(key.starts_with(KEY_PREFIX));
    let again = ServiceLocation::from_key(&key).expect("a key made from a location parses");
    assert_eq!(again, location);
    assert!(key.starts_with(&ServiceLocation::service_prefix(
        &location.scope,
        &location.service
    )));

    let full = location.with_value(value);
    assert_eq!(entry.as_ref(), Some(&full));
    let encoded = full.value();
    let decoded = ServiceLocation::from_key(&full.key())
        .expect("the key again")
        .with_value(encoded.as_bytes());
    assert_eq!(decoded, full, "value {encoded}");
    let entries = parse_entries([(full.key().as_bytes(), encoded.as_bytes())]);
    assert_eq!(entries.get(&full.key()), Some(&full));
});
