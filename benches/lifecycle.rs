//! `cargo bench`: the full benchmark table (SPEC §10). `CML_BENCH_QUICK=1` runs one tiny iteration.
//! Needs root (it starts a real cmld and containers) and prints host facts, our figures and crun's.

#[path = "harness/mod.rs"]
mod harness;

fn main() {
    // `cargo bench` passes `--bench` (and a filter, if any): nothing to choose from here.
    let cfg = if std::env::var_os("CML_BENCH_QUICK").is_some() {
        harness::Config::tiny()
    } else {
        harness::Config::full()
    };
    harness::run(&cfg);
}
