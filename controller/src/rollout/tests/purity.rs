//! The machine must stay pure (STYLE rule 1), so a convenient clock read cannot slip in unnoticed.

#[test]
fn rollout_sources_do_no_io_and_read_no_clock() {
    crate::purity::assert_pure("rollout");
}
