//! Analysis is pure: no I/O, no clock, no process or environment access, no OS randomness.

#[test]
fn analysis_sources_do_no_io_and_read_no_clock() {
    crate::purity::assert_pure("analysis");
}
