//! Seed-era peers: bare request frames with no envelope and no handshake, each
//! answered with one bare response frame (seed: IPC Protocol; `#[ipc(bare)]`).

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_util::sync::CancellationToken;

use super::{
    connection::{Reader, Writer},
    Service,
};
use crate::{envelope::Envelope, IpcConfig};

/// Answers a seed-era peer: each bare request frame gets one bare response frame, in
/// order, until the peer closes, goes idle past the read timeout, or sends garbage.
pub(super) async fn serve_bare<S: Service>(
    service: &S,
    first: Bytes,
    mut reader: Reader,
    mut writer: Writer,
    config: &IpcConfig,
    stop: &CancellationToken,
) {
    let mut next = Some(first);
    loop {
        let frame = match next.take() {
            Some(frame) => frame,
            None => {
                let read = tokio::time::timeout(config.read_timeout(), reader.next());
                match tokio::select! {
                    read = read => read,
                    () = stop.cancelled() => return,
                } {
                    Ok(Some(Ok(frame))) => frame,
                    Ok(Some(Err(error))) => {
                        tracing::debug!(%error, "closing bare connection");
                        return;
                    }
                    Ok(None) | Err(_) => return,
                }
            }
        };
        let answer = match service.call_bare(frame).await {
            Some(Ok(answer)) => answer,
            Some(Err(status)) => {
                tracing::debug!(%status, "bare request failed; closing");
                return;
            }
            None => return,
        };
        let codec = *writer.encoder();
        if let Err(error) = codec.encode_bytes(&answer, writer.write_buffer_mut()) {
            tracing::debug!(%error, "bare response cannot be framed; closing");
            return;
        }
        let flush = SinkExt::<Envelope>::flush(&mut writer);
        if !matches!(
            tokio::time::timeout(config.write_timeout(), flush).await,
            Ok(Ok(()))
        ) {
            return;
        }
    }
}
