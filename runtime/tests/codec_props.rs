//! Property tests of the frame codec and the envelope decoder: whatever bytes a peer
//! sends, in whatever pieces they arrive, decoding never panics, never yields a frame
//! over the limit, and is independent of how the stream was split.

use bytes::BytesMut;
use daemoneye_ipc::{
    codec::HEADER_LEN,
    envelope::{pb, Body, Envelope},
    Crc32Variant, FrameCodec, IpcError,
};
use proptest::prelude::*;
use prost::Message;
use tokio_util::codec::{Decoder, Encoder};

/// Largest payload the round-trip property sends, in bytes.
const MAX_PAYLOAD: usize = 4096;

/// Cases per property: enough to explore, few enough to run in about a second.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 128,
        ..ProptestConfig::default()
    }
}

/// How a decoding session ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Ran out of input; `pending` bytes of an incomplete frame were left.
    Exhausted { pending: usize },
    /// The decoder reported an error (connection would be closed); its kind.
    Failed(&'static str),
}

fn kind(error: &IpcError) -> &'static str {
    match error {
        IpcError::InvalidLength { .. } => "InvalidLength",
        IpcError::TooLarge { .. } => "TooLarge",
        IpcError::CrcMismatch { .. } => "CrcMismatch",
        IpcError::PeerClosed => "PeerClosed",
        other => panic!("the decoder returned an unexpected error: {other:?}"),
    }
}

/// Feeds `input` to a fresh decoder in pieces of the given sizes (cycled; the last
/// piece takes the rest), decoding every frame available after each piece, then calls
/// `decode_eof`. Stops at the first error, as a connection does.
fn decode_in_pieces(
    mut codec: FrameCodec,
    input: &[u8],
    pieces: &[usize],
) -> (Vec<Vec<u8>>, End, Option<&'static str>) {
    let mut buffer = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = input;
    let mut sizes = pieces.iter().copied().cycle();
    while !rest.is_empty() {
        let size = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
        let (piece, tail) = rest.split_at(size);
        rest = tail;
        buffer.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buffer) {
                Ok(Some(frame)) => {
                    assert!(!frame.is_empty(), "an empty frame was yielded");
                    assert!(
                        frame.len() <= codec.max_frame_bytes(),
                        "frame over the limit"
                    );
                    frames.push(frame.to_vec());
                }
                Ok(None) => break,
                Err(error) => return (frames, End::Failed(kind(&error)), None),
            }
        }
    }
    let pending = buffer.len();
    let eof = match codec.decode_eof(&mut buffer) {
        // `decode` already took every complete frame.
        Ok(Some(frame)) => panic!("decode_eof found a frame decode missed: {frame:?}"),
        Ok(None) => {
            assert_eq!(pending, 0, "decode_eof accepted a partial frame");
            None
        }
        Err(error) => Some(kind(&error)),
    };
    (frames, End::Exhausted { pending }, eof)
}

/// A stream of valid frames holding `payloads`.
fn encode_all(codec: &FrameCodec, payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut stream = BytesMut::new();
    for payload in payloads {
        codec.encode_bytes(payload, &mut stream).expect("encodable");
    }
    stream.to_vec()
}

fn payloads() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 1..=MAX_PAYLOAD), 1..=4)
}

fn pieces() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..=600, 1..=16)
}

fn crc() -> impl Strategy<Value = Crc32Variant> {
    prop_oneof![Just(Crc32Variant::Castagnoli), Just(Crc32Variant::Ieee)]
}

/// Input a peer might send: pure noise, or valid frames with a few bytes overwritten
/// (which reaches the length, CRC and payload checks far more often than noise does).
fn hostile_input() -> impl Strategy<Value = Vec<u8>> {
    let noise = prop::collection::vec(any::<u8>(), 0..=1024);
    let mutated = (
        prop::collection::vec(prop::collection::vec(any::<u8>(), 1..=100), 1..=4),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..=4),
    )
        .prop_map(|(payloads, edits)| {
            let mut stream = encode_all(&FrameCodec::new(128, Crc32Variant::Castagnoli), &payloads);
            for (at, byte) in edits {
                let at = at.index(stream.len());
                stream[at] = byte;
            }
            stream
        });
    prop_oneof![noise, mutated]
}

proptest! {
    #![proptest_config(config())]

    /// Valid frames come out exactly as they went in, however the stream is split.
    #[test]
    fn round_trip_in_arbitrary_pieces(payloads in payloads(), pieces in pieces(), crc in crc()) {
        let codec = FrameCodec::new(MAX_PAYLOAD, crc);
        let stream = encode_all(&codec, &payloads);
        let expected_len: usize = payloads.iter().map(|p| HEADER_LEN + p.len()).sum();
        prop_assert_eq!(stream.len(), expected_len);
        let (frames, end, eof) = decode_in_pieces(codec, &stream, &pieces);
        prop_assert_eq!(frames, payloads);
        prop_assert_eq!(end, End::Exhausted { pending: 0 });
        prop_assert_eq!(eof, None);
    }

    /// A stream cut short ends in `PeerClosed` at EOF, after every complete frame.
    #[test]
    fn truncated_stream_is_peer_closed_at_eof(
        payloads in payloads(),
        cut in any::<prop::sample::Index>(),
        pieces in pieces(),
    ) {
        let codec = FrameCodec::new(MAX_PAYLOAD, Crc32Variant::Castagnoli);
        let stream = encode_all(&codec, &payloads);
        let cut = cut.index(stream.len()); // < len: always inside some frame
        let (frames, end, eof) = decode_in_pieces(codec, &stream[..cut], &pieces);
        let mut whole = 0;
        let mut offset = 0;
        for payload in &payloads {
            offset += HEADER_LEN + payload.len();
            if offset > cut {
                break;
            }
            whole += 1;
        }
        prop_assert_eq!(&frames[..], &payloads[..whole]);
        let partial = cut - payloads[..whole].iter().map(|p| HEADER_LEN + p.len()).sum::<usize>();
        prop_assert_eq!(end, End::Exhausted { pending: partial });
        prop_assert_eq!(eof, (partial > 0).then_some("PeerClosed"));
    }

    /// Hostile input never panics the decoder, never yields a frame over the limit
    /// (checked inside `decode_in_pieces`), and decodes the same whether it arrives in
    /// one piece or many.
    #[test]
    fn hostile_input_is_decoded_the_same_in_any_pieces(
        input in hostile_input(),
        pieces in pieces(),
        max_frame in 1usize..=256,
    ) {
        let codec = FrameCodec::new(max_frame, Crc32Variant::Castagnoli);
        let whole = decode_in_pieces(codec, &input, &[input.len().max(1)]);
        let split = decode_in_pieces(codec, &input, &pieces);
        let byte_by_byte = decode_in_pieces(codec, &input, &[1]);
        prop_assert_eq!(&whole, &split);
        prop_assert_eq!(&whole, &byte_by_byte);
    }

    /// `decode_eof` alone, on any buffer, never panics and never over-yields.
    #[test]
    fn decode_eof_on_hostile_input(input in hostile_input(), max_frame in 1usize..=256) {
        let mut codec = FrameCodec::new(max_frame, Crc32Variant::Castagnoli);
        let mut buffer = BytesMut::from(&input[..]);
        while let Ok(Some(frame)) = codec.decode_eof(&mut buffer) {
            prop_assert!(!frame.is_empty() && frame.len() <= max_frame);
        }
    }

    /// Decoding an envelope from any bytes never panics; whatever decodes re-encodes to
    /// an envelope that decodes to itself.
    #[test]
    fn envelope_from_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..=512)) {
        if let Ok(envelope) = Envelope::decode(&bytes[..]) {
            let again = Envelope::decode(&envelope.encode_to_vec()[..]).expect("re-decodes");
            prop_assert_eq!(again, envelope);
        }
    }

    /// Envelopes framed with the prost encoder come back intact.
    #[test]
    fn envelope_round_trip_through_the_codec(
        id in any::<u64>(),
        method_id in 1u32..=64,
        timeout_us in any::<u64>(),
        payload in prop::collection::vec(any::<u8>(), 0..=512),
        pieces in pieces(),
    ) {
        let mut codec = FrameCodec::new(MAX_PAYLOAD, Crc32Variant::Castagnoli);
        let envelope = Envelope::new(id, Body::Request(pb::Request {
            method_id,
            timeout_us,
            payload: payload.into(),
            initial_credit: 0,
        }));
        let mut stream = BytesMut::new();
        codec.encode(envelope.clone(), &mut stream).expect("encodable");
        let (frames, end, _) = decode_in_pieces(codec, &stream, &pieces);
        prop_assert_eq!(end, End::Exhausted { pending: 0 });
        prop_assert_eq!(frames.len(), 1);
        prop_assert_eq!(Envelope::decode(&frames[0][..]).expect("an envelope"), envelope);
    }
}
