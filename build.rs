//! Release builds of the binary lay their hot code out together (`src/hot_text.ld`, which
//! `bench/hot_text.sh` generates): less of the binary is resident.

fn main() {
    const SCRIPT: &str = "src/hot_text.ld";
    println!("cargo:rerun-if-changed={SCRIPT}");
    println!("cargo:rerun-if-changed=build.rs");
    // `TIDEGATE_HOT_TEXT=off`: link without it (to measure what it does).
    println!("cargo:rerun-if-env-changed=TIDEGATE_HOT_TEXT");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    // Symbol names differ in other profiles: there the script would only cost link time.
    if var("CARGO_CFG_TARGET_OS") == "linux"
        && var("PROFILE") == "release"
        && var("TIDEGATE_HOT_TEXT") != "off"
        && std::path::Path::new(SCRIPT).exists()
    {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,-T,{}/{SCRIPT}",
            var("CARGO_MANIFEST_DIR")
        );
    }
}
