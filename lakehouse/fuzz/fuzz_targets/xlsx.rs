#![no_main]
//! `cargo fuzz run xlsx`: see `lakehouse::fuzzing`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| lakehouse::fuzzing::run(lakehouse::fuzzing::Target::Xlsx, data));
