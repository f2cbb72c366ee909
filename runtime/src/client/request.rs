//! A unary request's envelope, `Envelope { correlation_id, body: Request { method_id,
//! timeout_us, payload } }`, encoded by hand, byte for byte as prost encodes it, so that
//! the caller's message is encoded straight into the frame: no payload buffer, and no
//! shared copy of one kept for retries (two allocations per call fewer). The client
//! counterpart of [`crate::reply`].

use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};

use crate::envelope::{pb, Body, Envelope};

/// A request message as the client encodes it; object-safe, so that one retry loop
/// serves every request type.
pub(super) trait RequestBody: Sync {
    /// Length of the encoded message, in bytes.
    fn encoded_len(&self) -> usize;
    /// Appends the encoded message, exactly [`encoded_len`](Self::encoded_len) bytes.
    fn encode(&self, dst: &mut BytesMut);
}

/// A prost message, encoded when its frame is built.
pub(super) struct Message<'a, M>(pub(super) &'a M);

impl<M: prost::Message> RequestBody for Message<'_, M> {
    fn encoded_len(&self) -> usize {
        self.0.encoded_len()
    }
    fn encode(&self, dst: &mut BytesMut) {
        self.0.encode_raw(dst);
    }
}

/// A message encoded already (`Client::call_raw`).
pub(super) struct Encoded<'a>(pub(super) &'a Bytes);

impl RequestBody for Encoded<'_> {
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_slice(self.0);
    }
}

/// The field numbers of `Envelope` and `Request` (see `proto/daemoneye_ipc.proto`).
const CORRELATION_ID_TAG: u32 = 1;
const REQUEST_TAG: u32 = 2;
const METHOD_ID_TAG: u32 = 1;
const TIMEOUT_US_TAG: u32 = 2;
const PAYLOAD_TAG: u32 = 3;

/// One unary request's envelope (`initial_credit` is 0 for unary calls: not written).
pub(super) struct RequestFrame<'a> {
    pub(super) correlation_id: u64,
    pub(super) method_id: u32,
    pub(super) timeout_us: u64,
    pub(super) payload: &'a dyn RequestBody,
}

fn varint_field_len(tag: u32, value: u64) -> usize {
    match value {
        0 => 0, // proto3: a zero scalar is not written
        value => key_len(tag) + encoded_len_varint(value),
    }
}

fn encode_varint_field(tag: u32, value: u64, dst: &mut BytesMut) {
    if value != 0 {
        encode_key(tag, WireType::Varint, dst);
        encode_varint(value, dst);
    }
}

impl RequestFrame<'_> {
    /// Length of the `Request` message, in bytes.
    fn body_len(&self, payload_len: usize) -> usize {
        let payload = match payload_len {
            0 => 0,
            n => key_len(PAYLOAD_TAG) + encoded_len_varint(n as u64) + n,
        };
        varint_field_len(METHOD_ID_TAG, u64::from(self.method_id))
            + varint_field_len(TIMEOUT_US_TAG, self.timeout_us)
            + payload
    }

    /// Length of the whole envelope, in bytes.
    pub(super) fn encoded_len(&self) -> usize {
        let body = self.body_len(self.payload.encoded_len());
        varint_field_len(CORRELATION_ID_TAG, self.correlation_id)
            + key_len(REQUEST_TAG)
            + encoded_len_varint(body as u64)
            + body
    }

    /// Appends the envelope, exactly [`encoded_len`](Self::encoded_len) bytes, to `dst`.
    pub(super) fn encode(&self, dst: &mut BytesMut) {
        let payload_len = self.payload.encoded_len();
        encode_varint_field(CORRELATION_ID_TAG, self.correlation_id, dst);
        encode_key(REQUEST_TAG, WireType::LengthDelimited, dst);
        encode_varint(self.body_len(payload_len) as u64, dst);
        encode_varint_field(METHOD_ID_TAG, u64::from(self.method_id), dst);
        encode_varint_field(TIMEOUT_US_TAG, self.timeout_us, dst);
        if payload_len > 0 {
            encode_key(PAYLOAD_TAG, WireType::LengthDelimited, dst);
            encode_varint(payload_len as u64, dst);
            dst.reserve(payload_len);
            self.payload.encode(dst);
        }
    }

    /// The same request as an owned envelope, for the writer task's queue.
    pub(super) fn to_envelope(&self) -> Envelope {
        let mut payload = BytesMut::with_capacity(self.payload.encoded_len());
        self.payload.encode(&mut payload);
        Envelope::new(
            self.correlation_id,
            Body::Request(pb::Request {
                method_id: self.method_id,
                timeout_us: self.timeout_us,
                payload: payload.freeze(),
                initial_credit: 0,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn requests_encode_as_prost_encodes_the_envelope() {
        let big = Bytes::from(vec![7u8; 300]);
        for id in [0, 1, 127, 128, u64::MAX] {
            for method_id in [0, 1, 300, u32::MAX] {
                for timeout_us in [0, 1, 30_000_000, u64::MAX] {
                    for payload in [Bytes::new(), Bytes::from_static(b"x"), big.clone()] {
                        let frame = RequestFrame {
                            correlation_id: id,
                            method_id,
                            timeout_us,
                            payload: &Encoded(&payload),
                        };
                        let want = frame.to_envelope().encode_to_vec();
                        let by_prost = Envelope::new(
                            id,
                            Body::Request(pb::Request {
                                method_id,
                                timeout_us,
                                payload: payload.clone(),
                                initial_credit: 0,
                            }),
                        )
                        .encode_to_vec();
                        assert_eq!(want, by_prost);
                        let mut got = BytesMut::new();
                        frame.encode(&mut got);
                        assert_eq!(&got[..], &want[..], "id {id} method {method_id}");
                        assert_eq!(frame.encoded_len(), want.len());
                    }
                }
            }
        }
    }

    #[test]
    fn a_message_is_encoded_as_prost_encodes_it() {
        let message = pb::Response {
            payload: Bytes::from_static(b"hello"),
        };
        let frame = RequestFrame {
            correlation_id: 9,
            method_id: 2,
            timeout_us: 5,
            payload: &Message(&message),
        };
        let mut got = BytesMut::new();
        frame.encode(&mut got);
        let want = Envelope::new(
            9,
            Body::Request(pb::Request {
                method_id: 2,
                timeout_us: 5,
                payload: Bytes::from(message.encode_to_vec()),
                initial_credit: 0,
            }),
        )
        .encode_to_vec();
        assert_eq!(&got[..], &want[..]);
        assert_eq!(frame.encoded_len(), want.len());
    }
}
