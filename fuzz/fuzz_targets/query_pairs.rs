//! Query strings: splitting and percent-decoding never panic, and every pair comes from a
//! non-empty `&`-separated part.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidegate::model::query_pairs;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let parts = query.split('&').filter(|p| !p.is_empty()).count();
    assert_eq!(query_pairs(query).count(), parts);
});
