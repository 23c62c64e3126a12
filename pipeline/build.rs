//! Records the versions of datafusion and candle that this binary was built
//! with (read from Cargo.lock) so every manifest can name them.

fn main() {
    let lock = std::fs::read_to_string("../Cargo.lock").unwrap_or_default();
    for (krate, var) in [("datafusion", "SIEVE_DATAFUSION_VERSION"), ("candle-core", "SIEVE_CANDLE_VERSION")] {
        let version = lock
            .split("[[package]]")
            .find(|p| p.contains(&format!("name = \"{krate}\"\n")))
            .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
            .map_or("unknown", |v| v.trim_end_matches('"'));
        println!("cargo:rustc-env={var}={version}");
    }
    println!("cargo:rerun-if-changed=../Cargo.lock");
}
