//! The hook, saving vector state with xsave/xrstor (the fallback for unknown CPUs).

mod common;

#[test]
fn hook_end_to_end_with_xsave() {
    common::hook_end_to_end(true);
}
