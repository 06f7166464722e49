//! Arbitrary bytes as a record batch: validation, the stored-batch check and the record-level
//! timestamp lookup must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_engine::batch;

fuzz_target!(|data: &[u8]| {
    let _ = batch::validate(data, 0);
    let _ = batch::check_stored(data);
    let _ = batch::first_record_at_or_after(data, 0, 0);
});
