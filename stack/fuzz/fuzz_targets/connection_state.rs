#![no_main]
//! A moved connection's state, as another process sent it: decoding never panics, and
//! whatever decodes encodes back to the same bytes.
use libfuzzer_sys::fuzz_target;
use stack::tcp::ConnectionState;

fuzz_target!(|data: &[u8]| {
    if let Ok(st) = ConnectionState::decode(data) {
        assert_eq!(st.encode(), data);
    }
});
