//! `cargo bench`: the full benchmark table (SPEC §10). Run any other way — `cargo test
//! --all-targets` runs bench targets without `--bench` — or with `CML_BENCH_QUICK=1`, it does one
//! tiny iteration without peers. Needs root (it starts a real cmld and containers).

#[path = "harness/mod.rs"]
mod harness;

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let cfg = if benching && std::env::var_os("CML_BENCH_QUICK").is_none() {
        harness::Config::full()
    } else {
        harness::Config::tiny()
    };
    harness::run(&cfg);
}
