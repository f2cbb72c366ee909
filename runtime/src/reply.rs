//! A handler's answer on its way to the wire, kept as the message itself so that the
//! connection's writer encodes it once, straight into the frame behind its envelope
//! header: no intermediate buffer, no copy (a 115 KB answer used to be encoded into a
//! `Vec`, then copied into the frame).

use bytes::{Bytes, BytesMut};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};

/// The encoded payload of a `Response` or a `StreamItem`: a message still to be
/// encoded, or bytes already encoded. Its encoded length is computed once, here.
pub struct Reply {
    /// Encoded length of the payload, in bytes.
    len: usize,
    payload: Payload,
}

enum Payload {
    Encoded(Bytes),
    Message(Box<dyn Encodable>),
}

/// The object-safe part of [`prost::Message`] the writer needs.
trait Encodable: Send + Sync + 'static {
    /// Writes the message's fields (no length prefix) into `dst`.
    fn encode_fields(&self, dst: &mut BytesMut);
}

impl<M: prost::Message + 'static> Encodable for M {
    fn encode_fields(&self, dst: &mut BytesMut) {
        self.encode_raw(dst);
    }
}

impl Reply {
    /// An answer holding `message`, encoded later by the connection's writer.
    pub fn message<M: prost::Message + 'static>(message: M) -> Self {
        Self {
            len: message.encoded_len(),
            payload: Payload::Message(Box::new(message)),
        }
    }

    /// An answer already encoded.
    pub fn encoded(payload: Bytes) -> Self {
        Self {
            len: payload.len(),
            payload: Payload::Encoded(payload),
        }
    }

    /// The payload's encoded length, in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the payload encodes to no bytes (a message with every field at its
    /// default).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The encoded payload as a new vector (for tests and diagnostics; the writer
    /// encodes it in place).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut buffer = BytesMut::with_capacity(self.len);
        self.encode_into(&mut buffer);
        buffer.to_vec()
    }

    /// Appends the encoded payload, exactly [`len`](Self::len) bytes, to `dst`.
    pub(crate) fn encode_into(&self, dst: &mut BytesMut) {
        match &self.payload {
            Payload::Encoded(bytes) => dst.extend_from_slice(bytes),
            Payload::Message(message) => message.encode_fields(dst),
        }
    }
}

impl From<Bytes> for Reply {
    fn from(payload: Bytes) -> Self {
        Self::encoded(payload)
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply").field("len", &self.len).finish()
    }
}

/// Which envelope body carries an [`Answer`]'s payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AnswerKind {
    /// `Body::Response`: a unary call's answer.
    Response,
    /// `Body::StreamItem`: one item of a server stream.
    StreamItem,
}

impl AnswerKind {
    /// The field number of the body in `Envelope` (see `proto/daemoneye_ipc.proto`).
    fn tag(self) -> u32 {
        match self {
            AnswerKind::Response => 3,
            AnswerKind::StreamItem => 6,
        }
    }
}

/// The field number of `correlation_id` in `Envelope`.
const CORRELATION_ID_TAG: u32 = 1;
/// The field number of `payload` in `Response` and `StreamItem`.
const PAYLOAD_TAG: u32 = 1;

/// An envelope carrying a [`Reply`]: `Envelope { correlation_id, body: Response or
/// StreamItem { payload } }`, encoded by hand, byte for byte as prost encodes it, so
/// that the payload goes straight into the frame.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) correlation_id: u64,
    pub(crate) kind: AnswerKind,
    pub(crate) reply: Reply,
}

impl Answer {
    /// Length of the body message (`Response` or `StreamItem`), in bytes.
    fn body_len(&self) -> usize {
        match self.reply.len() {
            0 => 0, // proto3: an empty `bytes` field is not written
            n => key_len(PAYLOAD_TAG) + encoded_len_varint(n as u64) + n,
        }
    }

    /// Length of the whole envelope, in bytes.
    pub(crate) fn encoded_len(&self) -> usize {
        let id = match self.correlation_id {
            0 => 0,
            id => key_len(CORRELATION_ID_TAG) + encoded_len_varint(id),
        };
        let body = self.body_len();
        id + key_len(self.kind.tag()) + encoded_len_varint(body as u64) + body
    }

    /// Appends the envelope, exactly [`encoded_len`](Self::encoded_len) bytes, to `dst`.
    pub(crate) fn encode(&self, dst: &mut BytesMut) {
        if self.correlation_id != 0 {
            encode_key(CORRELATION_ID_TAG, WireType::Varint, dst);
            encode_varint(self.correlation_id, dst);
        }
        let body = self.body_len();
        encode_key(self.kind.tag(), WireType::LengthDelimited, dst);
        encode_varint(body as u64, dst);
        if !self.reply.is_empty() {
            encode_key(PAYLOAD_TAG, WireType::LengthDelimited, dst);
            encode_varint(self.reply.len() as u64, dst);
            dst.reserve(self.reply.len());
            self.reply.encode_into(dst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{pb, Body, Envelope};
    use prost::Message;

    fn by_prost(id: u64, kind: AnswerKind, payload: &[u8]) -> Vec<u8> {
        let payload = Bytes::copy_from_slice(payload);
        let body = match kind {
            AnswerKind::Response => Body::Response(pb::Response { payload }),
            AnswerKind::StreamItem => Body::StreamItem(pb::StreamItem { payload }),
        };
        Envelope::new(id, body).encode_to_vec()
    }

    #[test]
    fn answers_encode_as_prost_encodes_the_envelope() {
        let big = vec![7u8; 300];
        for id in [0, 1, 127, 128, u64::MAX] {
            for kind in [AnswerKind::Response, AnswerKind::StreamItem] {
                for payload in [&b""[..], b"x", &big] {
                    let want = by_prost(id, kind, payload);
                    for reply in [
                        Reply::encoded(Bytes::copy_from_slice(payload)),
                        Reply::message(pb::Response {
                            payload: Bytes::copy_from_slice(payload),
                        }),
                    ] {
                        // The second reply is a message whose encoding is other bytes:
                        // compare it with the envelope of those bytes.
                        let inner = reply.to_vec();
                        let want = if inner == payload {
                            want.clone()
                        } else {
                            by_prost(id, kind, &inner)
                        };
                        let answer = Answer {
                            correlation_id: id,
                            kind,
                            reply,
                        };
                        let mut got = BytesMut::new();
                        answer.encode(&mut got);
                        assert_eq!(got.len(), answer.encoded_len(), "id {id} {kind:?}");
                        assert_eq!(&got[..], &want[..], "id {id} {kind:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_message_reply_encodes_as_the_message() {
        let message = pb::Response {
            payload: Bytes::from_static(b"abc"),
        };
        let reply = Reply::message(message.clone());
        assert_eq!(reply.len(), message.encoded_len());
        assert_eq!(reply.to_vec(), message.encode_to_vec());
    }
}
