//! The hook, saving vector state with the explicit register moves the CPU allows.

mod common;

#[test]
fn hook_end_to_end() {
    common::hook_end_to_end(false);
}
