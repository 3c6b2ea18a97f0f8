//! Accepting the `:authority` that gRPC's C core (Python, C++, Ruby, PHP,
//! C#) and grpc-java send on unix sockets.
//!
//! Those clients put the socket path in the HTTP/2 `:authority`
//! pseudo-header (`tmp%2Fb.sock`, `/run/berth/buildd.sock`). h2, under
//! hyper and tonic, parses `:authority` as an RFC 3986 authority and resets
//! the stream with PROTOCOL_ERROR when it is not one, before any service
//! code runs: the client sees INTERNAL "RST_STREAM" and the daemon logs
//! nothing (hyperium/h2#487 is still open). h2 offers no knob for it.
//!
//! So each connection goes through a relay that decodes the client's
//! frames with h2's own codec, drops an `:authority` that is not a valid
//! authority (it names nothing on a unix socket, and HTTP/2 makes it
//! optional), and re-encodes the frames for tonic on an in-memory pipe.
//! The server's frames are copied back unchanged. Decoding and re-encoding
//! with one HPACK state per side keeps the header compression of both
//! directions consistent.
//!
//! Limit: padded DATA frames (which no gRPC implementation sends) are
//! forwarded without their padding, so the client's flow-control window is
//! not given back the padding bytes.
use h2::frame::Frame;
use std::future::poll_fn;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::UnixStream;
use tokio_stream::StreamExt;

/// The HTTP/2 client connection preface (RFC 9113 §3.4), sent before frames.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Room in the in-memory pipe per direction: a few frames of the default
/// 16 KiB size, so a slow side applies back-pressure to the other.
const PIPE_BYTES: usize = 256 << 10;

/// Whether `value` is an `:authority` h2 accepts.
pub fn acceptable(value: &str) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// Starts relaying `client` and returns the end to serve gRPC on.
pub fn relay(client: UnixStream) -> DuplexStream {
    let (served, ours) = tokio::io::duplex(PIPE_BYTES);
    tokio::spawn(async move {
        if let Err(e) = run(client, ours).await {
            eprintln!("berth-buildd: connection: {e:#}");
        }
    });
    served
}

async fn run(client: UnixStream, server: DuplexStream) -> anyhow::Result<()> {
    use anyhow::Context;
    let (mut client_rd, mut client_wr) = client.into_split();
    let (server_rd, mut server_wr) = tokio::io::split(server);
    let mut preface = [0u8; 24];
    if client_rd.read_exact(&mut preface).await.is_err() {
        return Ok(()); // closed before speaking: a probe, nothing to serve
    }
    // Not HTTP/2: hand it over as it is and let the server refuse it.
    server_wr.write_all(&preface).await?;
    if &preface != PREFACE {
        let up = async {
            tokio::io::copy(&mut client_rd, &mut server_wr).await?;
            server_wr.shutdown().await
        };
        let mut server_rd = server_rd;
        let down = tokio::io::copy(&mut server_rd, &mut client_wr);
        let _ = tokio::join!(up, down);
        return Ok(());
    }
    // Server → client: byte for byte.
    let down = tokio::spawn(async move {
        let mut server_rd = server_rd;
        let r = tokio::io::copy(&mut server_rd, &mut client_wr).await;
        let _ = client_wr.shutdown().await;
        r
    });
    // Client → server: frame by frame.
    let mut codec: h2::Codec<_, bytes::Bytes> =
        h2::Codec::new(tokio::io::join(client_rd, server_wr));
    let up: anyhow::Result<()> = async {
        while let Some(frame) = codec.next().await {
            let mut frame =
                frame.map_err(|e| anyhow::anyhow!("reading a frame from the client: {e:?}"))?;
            match &mut frame {
                Frame::Headers(h) => {
                    let p = h.pseudo_mut();
                    if p.authority.as_deref().is_some_and(|a| !acceptable(a)) {
                        p.authority = None;
                    }
                }
                // h2's decoder strips the padding but keeps the PADDED flag,
                // which its encoder would then write without a pad length:
                // forward the data unpadded.
                Frame::Data(d) if d.is_padded() => {
                    let mut plain = h2::frame::Data::new(d.stream_id(), d.payload().clone());
                    plain.set_end_stream(d.is_end_stream());
                    frame = Frame::Data(plain);
                }
                _ => {}
            }
            poll_fn(|cx| codec.poll_ready(cx))
                .await
                .context("writing to the server")?;
            codec
                .buffer(frame)
                .map_err(|e| anyhow::anyhow!("re-encoding a frame: {e:?}"))?;
            poll_fn(|cx| codec.flush(cx))
                .await
                .context("writing to the server")?;
        }
        Ok(())
    }
    .await;
    let _ = poll_fn(|cx| codec.shutdown(cx)).await;
    // The server side ends once it has answered what it got.
    let _ = down.await;
    up
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_are_not_authorities() {
        assert!(acceptable("localhost"));
        assert!(acceptable("[::]:50051"));
        assert!(!acceptable("tmp%2Fg1%2Fb.sock"));
        assert!(!acceptable("/run/berth/buildd.sock"));
    }
}
