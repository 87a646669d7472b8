//! Where every handled system call arrives (on the thread's alternate stack, with the
//! thread's "inside the shim" flag set, vector state saved).
//!
//! Layers see the call in order; each either answers it (returns the result) or leaves it
//! to the next. What nobody answers returns [`rewriter::PASSTHROUGH`]: the hook then makes
//! the real call with the arguments in `args` (a layer may have changed them).
//! The socket layer plugs in after the counter: it registers its numbers with
//! `rewriter::filter::handle_fd_syscall`/`handle_syscall`, marks its fds with
//! `rewriter::filter::mark_fd`, and answers calls on them here.

use rewriter::SyscallArgs;

/// The handler given to `rewriter::install`.
pub extern "C" fn dispatch(args: &mut SyscallArgs) -> i64 {
    if crate::trace::is_enabled() {
        crate::trace::count(args);
    }
    crate::sockets::handle(args)
}
