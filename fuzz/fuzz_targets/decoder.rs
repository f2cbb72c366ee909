//! Feeds arbitrary bytes to the frame decoder, as a peer would send them, and every
//! frame it yields to the envelope decoder.
//!
//! The first input byte picks the decoder's limit and how the rest is split into
//! reads, so that the fuzzer explores partial headers, partial bodies, and frames that
//! straddle reads. Checked: no panic, no frame empty or over the limit, and after an
//! error the connection would be closed (decoding stops).
#![no_main]

use bytes::BytesMut;
use daemoneye_ipc::{envelope::Envelope, Crc32Variant, FrameCodec};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    // Bits 0-4: the limit, 1..=497 bytes, small enough that fuzzed lengths often fit.
    let max_frame = usize::from(control & 0x1F) * 16 + 1;
    // Bit 5: the checksum.
    let crc = if control & 0x20 == 0 {
        Crc32Variant::Castagnoli
    } else {
        Crc32Variant::Ieee
    };
    // Bits 6-7: the read size, 1, 4 or 7 bytes, or the whole input at once.
    let piece = match control >> 6 {
        0 => input.len().max(1),
        n => usize::from(n) * 3 - 2,
    };
    let mut codec = FrameCodec::new(max_frame, crc);
    let mut buffer = BytesMut::new();
    for chunk in input.chunks(piece) {
        buffer.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buffer) {
                Ok(Some(frame)) => {
                    assert!(!frame.is_empty() && frame.len() <= max_frame);
                    if let Ok(envelope) = Envelope::decode(frame) {
                        // Whatever decodes must survive a re-encode unchanged.
                        let again = Envelope::decode(&envelope.encode_to_vec()[..]);
                        assert_eq!(again.ok(), Some(envelope));
                    }
                }
                Ok(None) => break,
                Err(_) => return, // the connection would be closed here
            }
        }
    }
    let _ = codec.decode_eof(&mut buffer);
});
