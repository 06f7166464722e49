//! Arbitrary request frames through the broker's frame parser and the request decoders of
//! every API it serves: nothing may panic.
#![no_main]

use bytes::Bytes;
use kafka_protocol::messages::RequestKind;
use libfuzzer_sys::fuzz_target;
use tern_net::conn::{parse_frame, Parsed};

fuzz_target!(|data: &[u8]| {
    if let Ok(Parsed::Request { api, header, mut body }) = parse_frame(Bytes::copy_from_slice(data))
    {
        let _ = RequestKind::decode(api, &mut body, header.request_api_version);
    }
});
