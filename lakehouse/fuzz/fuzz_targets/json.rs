#![no_main]
//! `cargo fuzz run json`: see `lakehouse::fuzzing`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| lakehouse::fuzzing::run(lakehouse::fuzzing::Target::Json, data));
