//! Backends that move Ethernet frames between the stack and the outside: AF_XDP
//! sockets steered by a port-map XDP program, and a TAP device for tests.
