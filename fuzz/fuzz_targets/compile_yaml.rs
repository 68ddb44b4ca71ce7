//! Any text as a configuration file, in both modes: reading and compiling never panic, and the
//! compiled table always passes its own validation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidegate::controller::file::{Mode, read_str};
use tidegate::controller::{CompileOptions, compile};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for (mode, discovery) in [(Mode::Standalone, false), (Mode::Kubernetes, true)] {
        let snap = read_str(text, "fuzz.yaml", mode);
        let opts = CompileOptions {
            discovery,
            ..CompileOptions::default()
        };
        let table = compile(&snap, &opts).table;
        table.validate().expect("a compiled table validates");
    }
});
