//! Golden tests of the compiler: each `tests/golden/compile/NAME.in.yaml` is read by the file
//! source and compiled; the table and diagnostics must equal `NAME.out.yaml`.
//! `UPDATE_GOLDEN=1 cargo test --test compile_golden` rewrites the expected files.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tidegate::controller::file::FileSource;
use tidegate::controller::{CompileOptions, compile};
use tidegate::model::{Backend, Rule};

#[derive(Serialize)]
struct Golden<'a> {
    rules: &'a [Rule],
    backends: &'a [Backend],
    diagnostics: Vec<String>,
}

fn render(input: &Path) -> String {
    let snap = FileSource::new(input)
        .load()
        .expect("golden input is readable");
    let table = compile(&snap, &CompileOptions::default()).table;
    table.validate().expect("compiled table is valid");
    let golden = Golden {
        rules: &table.rules,
        backends: &table.backends,
        diagnostics: table.diagnostics.iter().map(ToString::to_string).collect(),
    };
    serde_yaml_ng::to_string(&golden).expect("serializable")
}

#[test]
fn compile_matches_golden_files() {
    // Relative, so file names in diagnostics are the same on every machine (cargo runs tests
    // from the package root).
    let dir = PathBuf::from("tests/golden/compile");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".in.yaml"))
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no golden inputs in {}", dir.display());
    let mut failures = Vec::new();
    for input in &inputs {
        let expected_path = PathBuf::from(input.to_string_lossy().replace(".in.yaml", ".out.yaml"));
        let actual = render(input);
        if update {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
            panic!(
                "{} is missing; run with UPDATE_GOLDEN=1",
                expected_path.display()
            )
        });
        if expected != actual {
            failures.push(format!(
                "{}:\n{}",
                input.display(),
                pretty_assertions::StrComparison::new(&expected, &actual)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches (UPDATE_GOLDEN=1 to accept):\n{}",
        failures.join("\n")
    );
}
