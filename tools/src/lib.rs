//! Library side of the `fastnet` command, shared with the end-to-end tests.

pub mod cli;
pub mod doctor;
pub mod exe_kind;
pub mod exporter;
pub mod gendocs;
pub mod handoff;
pub mod netns;
pub mod pcap;
pub mod stat;
pub mod sys;
