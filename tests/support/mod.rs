//! Raw frames written and read by hand, independently of the runtime's codec, so that
//! tests speak the wire format exactly as the specification states it:
//! `[u32 LE length][u32 LE CRC32C of the payload][payload]`.
#![allow(dead_code)] // each test binary uses a part

use std::time::Duration;

use daemoneye_ipc::envelope::Envelope;
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A raw connection to a server's endpoint (a Unix socket or a named pipe), with no
/// handshake: what a hand-written or seed-era peer opens.
pub type RawStream = daemoneye_ipc::transport::Stream;

/// Opens a raw connection to `endpoint`.
pub async fn connect_raw(endpoint: &str) -> RawStream {
    daemoneye_ipc::transport::connect(endpoint, FRAME_PATIENCE)
        .await
        .expect("connect")
}

/// Upper bound for a frame the server is expected to send.
pub const FRAME_PATIENCE: Duration = Duration::from_secs(10);

/// One frame around `payload`, with the CRC given.
pub fn frame_with_crc(payload: &[u8], crc: u32) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + payload.len());
    frame.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_le_bytes());
    frame.extend_from_slice(&crc.to_le_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// One frame around `payload`, with its CRC32C.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    frame_with_crc(payload, crc32c::crc32c(payload))
}

/// Writes one frame around `payload`.
pub async fn write_frame(stream: &mut (impl AsyncRead + AsyncWrite + Unpin), payload: &[u8]) {
    stream.write_all(&frame(payload)).await.expect("write");
}

/// Writes one envelope as a frame.
pub async fn write_envelope(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    envelope: &Envelope,
) {
    stream
        .write_all(&frame(&envelope.encode_to_vec()))
        .await
        .expect("write");
}

/// Reads one frame (at most [`FRAME_PATIENCE`]), checking its CRC, and decodes its
/// envelope.
pub async fn read_envelope(stream: &mut (impl AsyncRead + AsyncWrite + Unpin)) -> Envelope {
    let payload = tokio::time::timeout(FRAME_PATIENCE, read_frame(stream))
        .await
        .expect("a frame within FRAME_PATIENCE");
    Envelope::decode(&payload[..]).expect("an envelope")
}

/// Reads one frame, checking its CRC; returns the payload.
pub async fn read_frame(stream: &mut (impl AsyncRead + AsyncWrite + Unpin)) -> Vec<u8> {
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).await.expect("header");
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.expect("payload");
    assert_eq!(crc32c::crc32c(&payload), crc, "frame CRC");
    payload
}

/// The name libtest gives test `name` of the module whose `module_path!()` is `module`
/// (the path without the crate's name), e.g. `streaming::helper_serve_streams` in the
/// `suite` binary: what a test passes with `--exact` to run a helper test of its own
/// binary in a child process. Derived from `module_path!()`, so that moving the file to
/// another binary or module cannot leave the child running no test.
pub fn test_name(module: &str, name: &str) -> String {
    match module.split_once("::") {
        Some((_crate, path)) => format!("{path}::{name}"),
        None => name.to_owned(),
    }
}
