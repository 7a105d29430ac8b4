//! The benchmark harness runs: one tiny iteration of every measurement (no peers), so `cargo bench`
//! cannot rot unnoticed. Nothing here is timed against a target.

#[path = "../benches/harness/mod.rs"]
mod harness;

#[test]
fn the_benchmark_harness_runs_one_tiny_iteration() {
    let rows = harness::run(&harness::Config::tiny());
    assert!(rows.len() >= 12, "{rows:?}");
    for r in &rows {
        assert!(r.median.is_finite() && r.median > 0.0, "{r:?}");
        assert!(r.p95 >= r.median, "{r:?}");
    }
    let (m, p) = harness::stats(&[5.0, 1.0, 3.0, 2.0, 4.0]);
    assert_eq!((m, p), (3.0, 5.0));
}
