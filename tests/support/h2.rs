//! Minimal HTTP/2 framing for what no client library will do on purpose: unfinished header
//! blocks, bursts of resets, and reading the server's SETTINGS and GOAWAY frames.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Safety net for reads that must end on their own; far above any expected time.
const BOUND: Duration = Duration::from_secs(30);

pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const ACK: u8 = 0x1;
pub const DATA: u8 = 0x0;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
/// HPACK static-table entries :method POST, :scheme https, :path /.
pub const POST_ROOT: [u8; 3] = [0x83, 0x87, 0x84];

pub fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("small frame");
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

pub async fn write_frame(
    stream: &mut (impl AsyncWrite + Unpin),
    kind: u8,
    flags: u8,
    id: u32,
    payload: &[u8],
) {
    let mut out = Vec::new();
    frame(&mut out, kind, flags, id, payload);
    stream.write_all(&out).await.expect("frame written");
    stream.flush().await.expect("flush");
}

pub async fn start(stream: &mut (impl AsyncWrite + Unpin)) {
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("preface");
    write_frame(stream, SETTINGS, 0, 0, &[]).await;
}

/// POST /validate with a JSON body on stream `id` (literal headers, no Huffman coding).
pub async fn post(stream: &mut (impl AsyncWrite + Unpin), id: u32, body: &[u8]) {
    open_post(stream, id).await;
    write_frame(stream, DATA, END_STREAM, id, body).await;
}

/// The headers of POST /validate on stream `id`, its body still to come.
pub async fn open_post(stream: &mut (impl AsyncWrite + Unpin), id: u32) {
    let mut block = vec![0x83, 0x87];
    literal(&mut block, 4, b"/validate");
    // Pseudo-headers first, or the stream is a protocol error.
    literal(&mut block, 1, b"localhost");
    literal(&mut block, 31, b"application/json");
    write_frame(stream, HEADERS, END_HEADERS, id, &block).await;
}

/// Whether the server sends a PING (not an acknowledgement) within `within`.
pub async fn pinged_within(stream: &mut (impl AsyncRead + Unpin), within: Duration) -> bool {
    tokio::time::timeout(within, async {
        while let Some((kind, flags, _, _)) = read_frame(stream).await {
            if kind == PING && flags & ACK == 0 {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false)
}

/// Reads until `streams` more streams have ended (a frame with END_STREAM); whether a GOAWAY
/// came among those frames. PINGs are acknowledged.
pub async fn read_answers(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    streams: usize,
) -> bool {
    let mut ended = 0;
    let mut goaway = false;
    tokio::time::timeout(BOUND, async {
        while ended < streams {
            let (kind, flags, _, payload) = read_frame(stream).await.expect("the answers");
            acknowledge_ping(stream, kind, flags, &payload).await;
            goaway |= kind == GOAWAY;
            if (kind == HEADERS || kind == DATA) && flags & END_STREAM != 0 {
                ended += 1;
            }
        }
    })
    .await
    .expect("the answers in time");
    goaway
}

/// Whether the server sends GOAWAY within `within`.
pub async fn goaway_within(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    within: Duration,
) -> bool {
    tokio::time::timeout(within, async {
        while let Some((kind, flags, _, payload)) = read_frame(stream).await {
            acknowledge_ping(stream, kind, flags, &payload).await;
            if kind == GOAWAY {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false)
}

/// Acknowledges a PING, as every real client does (graceful shutdown waits for it).
async fn acknowledge_ping(
    stream: &mut (impl AsyncWrite + Unpin),
    kind: u8,
    flags: u8,
    payload: &[u8],
) {
    if kind == PING && flags & ACK == 0 {
        let mut ack = Vec::new();
        frame(&mut ack, PING, ACK, 0, payload);
        // The server may already be gone; the next read notices.
        let _ = stream.write_all(&ack).await;
        let _ = stream.flush().await;
    }
}

/// A literal header field without indexing, name by static-table index.
fn literal(block: &mut Vec<u8>, name_index: u8, value: &[u8]) {
    assert!(name_index < 15 || name_index == 31);
    if name_index < 15 {
        block.push(name_index);
    } else {
        block.extend_from_slice(&[0x0f, name_index - 15]);
    }
    let len = u8::try_from(value.len()).expect("short value");
    assert!(len < 127);
    block.push(len);
    block.extend_from_slice(value);
}

async fn read_frame(stream: &mut (impl AsyncRead + Unpin)) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], id, payload))
}

pub async fn read_server_settings(stream: &mut (impl AsyncRead + Unpin)) -> Vec<(u16, u32)> {
    loop {
        let (kind, flags, _, payload) = tokio::time::timeout(BOUND, read_frame(stream))
            .await
            .expect("settings in time")
            .expect("a frame");
        if kind == SETTINGS && flags & 0x1 == 0 {
            return payload
                .chunks_exact(6)
                .map(|c| {
                    (
                        u16::from_be_bytes([c[0], c[1]]),
                        u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                    )
                })
                .collect();
        }
    }
}

pub struct GoAway {
    pub error_code: u32,
    /// Streams whose response headers arrived before the connection closed.
    pub answered: Vec<u32>,
}

/// Reads until the server closes the connection; the GOAWAY must be among the frames.
/// PINGs are acknowledged, as every real client does (graceful shutdown waits for it).
pub async fn read_until_goaway(stream: &mut (impl AsyncRead + AsyncWrite + Unpin)) -> GoAway {
    let mut answered = Vec::new();
    let mut error_code = None;
    tokio::time::timeout(BOUND, async {
        while let Some((kind, flags, id, payload)) = read_frame(stream).await {
            acknowledge_ping(stream, kind, flags, &payload).await;
            if kind == HEADERS && !answered.contains(&id) {
                answered.push(id);
            }
            if kind == GOAWAY {
                error_code = Some(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ]));
            }
        }
    })
    .await
    .expect("the connection closed in time");
    answered.sort_unstable();
    GoAway {
        error_code: error_code.expect("a GOAWAY frame before the connection closed"),
        answered,
    }
}

/// `pairs` streams, each opened (HEADERS) and at once cancelled (RST_STREAM CANCEL): the
/// rapid-reset pattern.
pub fn reset_burst(pairs: u32) -> Vec<u8> {
    let mut burst = Vec::new();
    for i in 0..pairs {
        let id = 2 * i + 1;
        frame(&mut burst, HEADERS, END_HEADERS, id, &POST_ROOT);
        frame(&mut burst, RST_STREAM, 0, id, &8u32.to_be_bytes());
    }
    burst
}
