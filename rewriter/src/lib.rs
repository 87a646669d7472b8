//! zpoline-style syscall rewriting: find `syscall` instructions, rewrite them to `call *%rax`, and the trampoline page at address 0
