//! Durations: the parser accepts exactly what the CRD schema's pattern accepts (a differential
//! check), and what it accepts displays back to an equal duration. (Beyond 99999 h there is no
//! way to write a sum within the pattern's five digits a part: those are left out.)
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use tidegate::api::{DURATION_PATTERN, Duration};

static PATTERN: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(DURATION_PATTERN).unwrap());

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = text.parse::<Duration>();
    assert_eq!(parsed.is_ok(), PATTERN.is_match(text), "{text:?}");
    if let Ok(d) = parsed
        && d.0 < std::time::Duration::from_secs(100_000 * 3600)
    {
        let shown = d.to_string();
        assert_eq!(
            shown.parse::<Duration>().ok(),
            Some(d),
            "{text:?} shows as {shown:?}"
        );
    }
});
