//! Frame codec: `[u32 LE length N][u32 LE CRC][N bytes payload]`
//! (seed: IPC Protocol, Message Framing).
//!
//! [`FrameCodec`] is a [`tokio_util::codec`] `Decoder` yielding each verified payload as
//! [`Bytes`] and an `Encoder` for any prost message. The decoder checks, in order:
//!
//! 1. `N == 0` -> [`IpcError::InvalidLength`];
//! 2. `N > max_frame_bytes` -> [`IpcError::TooLarge`], from the 8-byte header alone,
//!    before any of the body is read or buffered;
//! 3. CRC differs -> [`IpcError::CrcMismatch`];
//! 4. end of stream inside a frame -> [`IpcError::PeerClosed`].
//!
//! After any of these errors the stream's frame boundaries can no longer be trusted and
//! the connection must be closed.

use std::{fmt, str::FromStr};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use tokio_util::codec::{Decoder, Encoder};

use crate::IpcError;

/// Bytes in a frame header: length then CRC, both `u32` little-endian.
pub const HEADER_LEN: usize = 8;

/// Frames and unframes payloads; see the [module docs](self).
#[derive(Clone, Copy, Debug)]
pub struct FrameCodec {
    max_frame_bytes: usize,
    crc: Crc32Variant,
}

impl FrameCodec {
    /// A codec that accepts and sends payloads of at most `max_frame_bytes` bytes,
    /// checksummed with `crc`.
    pub fn new(max_frame_bytes: usize, crc: Crc32Variant) -> Self {
        Self {
            max_frame_bytes,
            crc,
        }
    }

    /// The payload size limit, in bytes.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Writes one frame holding `payload` (already encoded) into `dst`.
    ///
    /// # Errors
    /// `InvalidLength` for an empty payload, `TooLarge` over the limit; `dst` is
    /// unchanged on error.
    pub fn encode_bytes(&self, payload: &[u8], dst: &mut BytesMut) -> Result<(), IpcError> {
        self.check_len(payload.len())?;
        dst.reserve(HEADER_LEN + payload.len());
        dst.put_u32_le(payload.len() as u32);
        dst.put_u32_le(self.crc.checksum(payload));
        dst.extend_from_slice(payload);
        Ok(())
    }

    /// Writes one frame whose payload of exactly `len` bytes `write` appends to `dst`:
    /// the payload goes straight into `dst` behind a header patched afterwards with its
    /// CRC, with no intermediate buffer.
    ///
    /// # Errors
    /// `InvalidLength` for an empty payload, `TooLarge` over the limit; `dst` is
    /// unchanged on error and `write` is not called.
    pub fn encode_with(
        &self,
        len: usize,
        dst: &mut BytesMut,
        write: impl FnOnce(&mut BytesMut),
    ) -> Result<(), IpcError> {
        self.check_len(len)?;
        dst.reserve(HEADER_LEN + len);
        let start = dst.len();
        dst.put_u32_le(len as u32);
        dst.put_u32_le(0);
        write(dst);
        debug_assert_eq!(
            dst.len() - start - HEADER_LEN,
            len,
            "payload length as announced"
        );
        let crc = self.crc.checksum(&dst[start + HEADER_LEN..]);
        dst[start + 4..start + HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
        Ok(())
    }

    /// Whether `buf` (a read buffer) starts with a whole frame, header and body, by its
    /// header's length alone (the frame may still fail the decoder's checks): decoding
    /// the next frame then needs no read from the socket.
    pub fn holds_frame(buf: &[u8]) -> bool {
        announced_len(buf).is_some_and(|len| buf.len() - HEADER_LEN >= len)
    }

    fn check_len(&self, len: usize) -> Result<(), IpcError> {
        if len == 0 {
            return Err(IpcError::InvalidLength { length: 0 });
        }
        if len > self.max_frame_bytes {
            return Err(IpcError::TooLarge {
                size: len,
                max_size: self.max_frame_bytes,
            });
        }
        Ok(())
    }
}

/// The payload length the frame header at the start of `buf` announces, in bytes;
/// `None` until `buf` holds the whole header.
fn announced_len(buf: &[u8]) -> Option<usize> {
    let len = buf.first_chunk::<4>().filter(|_| buf.len() >= HEADER_LEN)?;
    Some(u32::from_le_bytes(*len) as usize)
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = IpcError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, IpcError> {
        let Some(len) = announced_len(src) else {
            return Ok(None);
        };
        if len == 0 {
            return Err(IpcError::InvalidLength { length: 0 });
        }
        if len > self.max_frame_bytes {
            return Err(IpcError::TooLarge {
                size: len,
                max_size: self.max_frame_bytes,
            });
        }
        let total = HEADER_LEN + len;
        if src.len() < total {
            // The header is valid: make room for the whole frame in one allocation.
            src.reserve(total - src.len());
            return Ok(None);
        }
        let expected = u32::from_le_bytes([src[4], src[5], src[6], src[7]]);
        src.advance(HEADER_LEN);
        let payload = src.split_to(len).freeze();
        let actual = self.crc.checksum(&payload);
        if actual != expected {
            return Err(IpcError::CrcMismatch { expected, actual });
        }
        Ok(Some(payload))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, IpcError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(IpcError::PeerClosed),
        }
    }
}

impl<M: prost::Message> Encoder<M> for FrameCodec {
    type Error = IpcError;

    /// Encodes `message` straight into `dst` behind its header: no intermediate buffer.
    fn encode(&mut self, message: M, dst: &mut BytesMut) -> Result<(), IpcError> {
        // `encode_with` reserved room for all of it: `encode_raw` cannot run short.
        self.encode_with(message.encoded_len(), dst, |dst| message.encode_raw(dst))
    }
}

/// Which CRC-32 polynomial frames carry. Both ends must agree.
///
/// In files and environment variables it is written `"crc32c"` or `"ieee"`, in any case
/// (`CRC32C` is accepted); it is always written back in lower case.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Crc32Variant {
    /// CRC-32C (Castagnoli), hardware-accelerated on x86-64 and aarch64. The default
    /// (seed: IPC Protocol, CRC32C Checksum Usage). Written `"crc32c"`.
    #[default]
    Castagnoli,
    /// CRC-32 IEEE 802.3 (the polynomial of zlib and Ethernet). Written `"ieee"`.
    Ieee,
}

impl Crc32Variant {
    /// What configuration values may say, in lower case.
    const NAMES: &'static str = "`crc32c` or `ieee` (any case)";

    /// The checksum of `bytes` under this variant.
    #[inline]
    pub fn checksum(self, bytes: &[u8]) -> u32 {
        match self {
            Crc32Variant::Castagnoli => crc32c::crc32c(bytes),
            Crc32Variant::Ieee => crc32fast::hash(bytes),
        }
    }

    /// The configuration name: `"crc32c"` or `"ieee"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Crc32Variant::Castagnoli => "crc32c",
            Crc32Variant::Ieee => "ieee",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [Crc32Variant::Castagnoli, Crc32Variant::Ieee]
            .into_iter()
            .find(|variant| variant.as_str().eq_ignore_ascii_case(name.trim()))
    }
}

impl fmt::Display for Crc32Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Crc32Variant {
    type Err = IpcError;

    /// Parses `"crc32c"` or `"ieee"`, ignoring case and surrounding whitespace.
    ///
    /// # Errors
    /// [`IpcError::Config`] for `crc32_variant` on any other text.
    fn from_str(name: &str) -> Result<Self, IpcError> {
        Self::from_name(name).ok_or_else(|| IpcError::Config {
            field: "crc32_variant",
            reason: format!("found {name:?}, expected {}", Self::NAMES),
        })
    }
}

impl Serialize for Crc32Variant {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Crc32Variant {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl de::Visitor<'_> for Name {
            type Value = Crc32Variant;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(Crc32Variant::NAMES)
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Crc32Variant, E> {
                Crc32Variant::from_name(name)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Str(name), &self))
            }
        }
        deserializer.deserialize_str(Name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec() -> FrameCodec {
        FrameCodec::new(1024, Crc32Variant::Castagnoli)
    }

    fn frame(payload: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        codec().encode_bytes(payload, &mut buf).expect("encode");
        buf
    }

    #[test]
    fn round_trip_and_layout() {
        let mut buf = frame(b"hello");
        assert_eq!(&buf[..4], &5u32.to_le_bytes());
        assert_eq!(&buf[4..8], &crc32c::crc32c(b"hello").to_le_bytes());
        assert_eq!(&buf[8..], b"hello");
        let out = codec().decode(&mut buf).expect("decode").expect("frame");
        assert_eq!(&out[..], b"hello");
        assert!(buf.is_empty());
    }

    #[test]
    fn prost_encoder_matches_bytes_encoder() {
        let message = crate::envelope::pb::Response {
            payload: Bytes::from_static(b"abc"),
        };
        let mut a = BytesMut::new();
        codec().encode(message.clone(), &mut a).expect("encode");
        let b = frame(&prost::Message::encode_to_vec(&message));
        assert_eq!(a, b);
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let full = frame(b"0123456789");
        let mut c = codec();
        for cut in 0..full.len() {
            let mut partial = BytesMut::from(&full[..cut]);
            assert!(c.decode(&mut partial).expect("no error").is_none());
        }
    }

    #[test]
    fn holds_frame_needs_header_and_whole_body() {
        let mut two = frame(b"abc");
        two.extend_from_slice(&frame(b"defg"));
        assert!(FrameCodec::holds_frame(&two));
        assert!(FrameCodec::holds_frame(&two[..HEADER_LEN + 3]));
        assert!(!FrameCodec::holds_frame(&two[..HEADER_LEN + 2]));
        assert!(!FrameCodec::holds_frame(&two[..HEADER_LEN - 1]));
        assert!(!FrameCodec::holds_frame(&[]));
        // The rest after the first frame: the second, then a part of it.
        let rest = &two[HEADER_LEN + 3..];
        assert!(FrameCodec::holds_frame(rest));
        assert!(!FrameCodec::holds_frame(&rest[..rest.len() - 1]));
    }

    #[test]
    fn two_frames_in_one_read() {
        let mut buf = frame(b"one");
        buf.extend_from_slice(&frame(b"two"));
        let mut c = codec();
        assert_eq!(&c.decode(&mut buf).unwrap().unwrap()[..], b"one");
        assert_eq!(&c.decode(&mut buf).unwrap().unwrap()[..], b"two");
        assert!(c.decode(&mut buf).unwrap().is_none());
    }

    #[test]
    fn zero_length_is_invalid() {
        let mut buf = BytesMut::from(&[0u8; 8][..]);
        let err = codec().decode(&mut buf).unwrap_err();
        assert!(
            matches!(err, IpcError::InvalidLength { length: 0 }),
            "{err:?}"
        );
    }

    #[test]
    fn too_large_is_rejected_from_the_header_without_allocating() {
        let mut buf = BytesMut::with_capacity(8);
        buf.put_u32_le(u32::MAX);
        buf.put_u32_le(0);
        let err = codec().decode(&mut buf).unwrap_err();
        assert!(
            matches!(err, IpcError::TooLarge { size, max_size: 1024 } if size == u32::MAX as usize),
            "{err:?}"
        );
        assert!(buf.capacity() < 1024, "no body buffer was reserved");
    }

    #[test]
    fn crc_mismatch() {
        let mut buf = frame(b"payload");
        let last = buf.len() - 1;
        buf[last] ^= 0x01;
        let err = codec().decode(&mut buf).unwrap_err();
        assert!(matches!(err, IpcError::CrcMismatch { .. }), "{err:?}");
    }

    #[test]
    fn eof_inside_a_frame_is_peer_closed() {
        let full = frame(b"payload");
        for cut in 1..full.len() {
            let mut partial = BytesMut::from(&full[..cut]);
            let err = codec().decode_eof(&mut partial).unwrap_err();
            assert!(matches!(err, IpcError::PeerClosed), "cut {cut}: {err:?}");
        }
        let mut empty = BytesMut::new();
        assert!(codec().decode_eof(&mut empty).unwrap().is_none());
    }

    #[test]
    fn ieee_variant_uses_ieee_polynomial() {
        let c = FrameCodec::new(1024, Crc32Variant::Ieee);
        let mut buf = BytesMut::new();
        c.encode_bytes(b"123456789", &mut buf).unwrap();
        // The standard CRC-32/IEEE check value of "123456789".
        assert_eq!(&buf[4..8], &0xCBF4_3926u32.to_le_bytes());
        // A CRC32C decoder rejects it: both ends must agree.
        let err = codec().decode(&mut buf.clone()).unwrap_err();
        assert!(matches!(err, IpcError::CrcMismatch { .. }));
        assert_eq!(
            &FrameCodec::new(1024, Crc32Variant::Ieee)
                .decode(&mut buf)
                .unwrap()
                .unwrap()[..],
            b"123456789"
        );
    }

    #[test]
    fn encoder_rejects_empty_and_oversized() {
        let mut buf = BytesMut::new();
        assert!(matches!(
            codec().encode_bytes(b"", &mut buf),
            Err(IpcError::InvalidLength { .. })
        ));
        assert!(matches!(
            codec().encode_bytes(&[0u8; 1025], &mut buf),
            Err(IpcError::TooLarge {
                size: 1025,
                max_size: 1024
            })
        ));
        assert!(buf.is_empty());
    }
}
